"""JWT issue/verify, JWKS, scopes, agreement-bound permissions, secrets."""
