"""A worker that answers through ChatGPT web accounts (the backend-api of chat.openai.com / chatgpt.com)."""
