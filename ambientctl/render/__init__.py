"""Renderers: one model, several views (summary text, detailed text, JSON)."""
