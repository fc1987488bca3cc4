"""The network as the paper describes it."""
