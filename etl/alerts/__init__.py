"""Alerts on stored usage (SPEC section 8): rules, evaluation, the outbox and the notifiers."""
