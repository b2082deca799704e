"""Built-in techniques, one module per family; each imports its backend inside build."""
