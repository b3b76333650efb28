"""The write-side stages: detect, batch and analyze, and the runtime that subscribes them."""
