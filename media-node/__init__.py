"""Media node: call server (SFU), transcoder and edge relay roles."""
