"""The demo: a realistic remittance day through the whole flow."""
