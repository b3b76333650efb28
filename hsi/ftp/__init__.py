"""The FTP receiver cameras upload to: accounts and the server."""
