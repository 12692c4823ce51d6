"""Vendor knowledge: how each LLM vendor reports failures and remaining quota."""
