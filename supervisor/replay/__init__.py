"""The replay exchange: a local server speaking each venue's public WebSocket/REST protocol."""
