"""The application: processes assembled from settings (runner, pipeline, ASGI app, doctor, docs)."""
