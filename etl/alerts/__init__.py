"""Alerts on stored usage (SPEC section 8): states, evaluation, history, the outbox and the notifiers."""
