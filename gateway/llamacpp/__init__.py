"""llama.cpp server's dialect (beside OpenAI's in `gateway.openai`): tokenizer endpoints."""
