"""The collector daemon: one venue instance -> its shared-memory ring and ZeroMQ."""
