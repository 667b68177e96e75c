"""The one error type minimagen raises for a learner's mistake: its message says what to do."""


class MinimagenError(ValueError):
    """A bad input or setting; the message is one sentence naming the fix."""
