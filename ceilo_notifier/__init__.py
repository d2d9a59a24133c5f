"""ceilo-notifier: deliver alarm notifications from OpenStack-style alarm evaluators."""
