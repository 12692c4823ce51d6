"""``QuotaRoutedEmbeddings``: embeddings on the same ledger and pools as the chat routes."""
