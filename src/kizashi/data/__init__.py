"""Raw input: schema, readers, validation, price adjustment, synthetic markets."""
