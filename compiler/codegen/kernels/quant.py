"""(placeholder: filled by the conformance work)."""
