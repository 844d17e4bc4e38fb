"""CuratedSchemaGen: ImportSchemaGen whose cache key follows the schema's content."""
