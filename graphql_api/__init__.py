"""The GraphQL API: Strawberry schema over the indexed PostgreSQL tables, served by Starlette.

It reads the database only; the indexer's work reaches it through tables and NOTIFY channels.
"""
