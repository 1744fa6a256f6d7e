"""The one-line help every config dataclass field carries (with its source), as field metadata."""


def help_text(text: str) -> dict:
    """`dataclasses.field(metadata=help_text("... (TRL GRPOConfig)"))`; read back as field.metadata["help"]."""
    return {"help": text}
