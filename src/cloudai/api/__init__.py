"""The master's HTTP API contract: request and response models (pydantic), shared by the
master's API handlers, its console and the CLI's client. The OpenAPI document is
generated from these models."""
