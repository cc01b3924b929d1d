"""The asset service: generation jobs and stored files (routes arrive with its issue)."""


def register(app, api) -> None:
    return None
