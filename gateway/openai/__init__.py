"""The wire layer: OpenAI's JSON in and out. Only this package knows that format."""
