"""The tracking service's PostgreSQL store: SQL and transactions, domain errors out."""
