"""Read models for people: traces and audit chains."""
