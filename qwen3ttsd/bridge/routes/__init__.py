"""The bridge's endpoints, one module per resource; each exports ``routes``."""
