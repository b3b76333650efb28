"""The write-side stages (detect, batch, analyze, notify), the loop they share, and the runtime
that subscribes them."""
