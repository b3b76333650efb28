"""Evidence export: events, their original files and what HSI made of them, as one zip.

A zip holds, under one folder per event, `events/<event_id>/event.json` (the event as the API
describes it, plus the digests recorded on arrival and the stream entry ids of every fact),
`summary.txt` (the same for a person) and `pictures/` (the files with their boxes drawn); the
originals, byte for byte, under `files/<camera_id>/<path>`; a `README.txt`; and `SHA256SUMS`
covering every other member, in the format `sha256sum -c` reads.

`plan` decides what goes in (and refuses an export over the size limit before a byte is
written), `archive` writes the zip as a stream of chunks, `verify` checks a zip.
"""
