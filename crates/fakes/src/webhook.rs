//! Webhooks as Meta sends them: the Cloud API envelope and its signature.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// The `calls` webhook envelope around one call object, for the business number
/// `phone_number_id` and the user `contact_wa_id` (named `contact_name`).
pub fn calls_envelope(
    phone_number_id: &str,
    contact_wa_id: &str,
    contact_name: &str,
    call: Value,
) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "calls", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": contact_name}, "wa_id": contact_wa_id}],
            "calls": [call]
        }}]}]
    })
    .to_string()
}

/// `X-Hub-Signature-256` for `body`: `sha256=` and the hex HMAC-SHA256 keyed with the app secret.
///
/// # Panics
/// Never: HMAC takes keys of any length.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
