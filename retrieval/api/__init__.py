"""The REST API's retrieval side: search, ask, conversations, API keys, and the OpenAI-compatible
endpoint. Views translate HTTP to service calls; ingestion/api.py holds documents and collections.
"""
