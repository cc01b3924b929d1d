"""Process-wide runtime pieces every service shares: the clock, the invalidation bus, the rate
limiter and the background batch writers (API-key use, usage events).

They hold no request state; `create_app` builds one of each per app and keeps them in the
typed `GaiaState` (`gaia_app.state`). Nothing here imports the identity package or a blueprint.
"""
