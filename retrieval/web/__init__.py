"""The staff web UI, one module per concern: chat (pages, asking, conversations), sources (cited
passages and downloads) and keys (the user's API keys).

Views translate HTTP to retrieval.answering / selectors / services and core.apikeys calls; who
may see what is decided by those and by ingestion.permissions, never here.
"""
