"""Errors the CLI reports as one line and a non-zero exit."""


class MMNeuronError(Exception):
    """Base class: the message is a complete, one-line explanation for the user."""


class AdapterError(MMNeuronError):
    """No adapter fits, or an adapter cannot resolve a module of the loaded model."""


class FileFormatError(MMNeuronError):
    """A stats or mask file is corrupt, of the wrong format, or inconsistent."""


class MaskMismatchError(MMNeuronError):
    """A mask or stats file does not match the model it is applied to."""
