//! (owned by the webhook-server work)
