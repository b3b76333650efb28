"""The route handlers, one module per noun; each exports `ENDPOINTS`."""
