"""The one error type the checkpoint tools raise for user-facing problems."""


class ConversionError(ValueError):
    """A checkpoint cannot be read, validated or converted; the message says what to do."""
