-- OAuth2 credentials the token worker keeps fresh (issue #13). One row per configured provider.
-- access_token and refresh_token are AES-256-GCM ciphertexts (12-byte nonce || ciphertext || tag)
-- under the key named by key_id, with the provider and the column name as associated data, so a
-- ciphertext copied to another row or column does not decrypt. Nothing in this table is a
-- plaintext secret; status, failures and last_error are safe to show.
CREATE TABLE oauth_tokens (
    provider             text PRIMARY KEY,
    access_token         bytea,
    refresh_token        bytea NOT NULL,
    key_id               text NOT NULL,
    expires_at           timestamptz,
    obtained_at          timestamptz,
    token_version        bigint NOT NULL DEFAULT 1,
    status               text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'needs_reauth', 'config_error', 'decrypt_error')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error           text,
    next_attempt_at      timestamptz,
    refreshed_at         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- rotate-key looks for rows still under another key.
CREATE INDEX oauth_tokens_key_id ON oauth_tokens (key_id);
