//! Webhook payloads: Meta's JSON (wire structs) → our [`InboundEvent`]s.
//!
//! Every entry, every change, every call, message and status becomes one event (the Go
//! precedent read only the first of each). One element that does not parse does not take the
//! others down with it: it becomes an [`EventBody::Unknown`] carrying the raw element, which is
//! recorded and answered 200 like the rest, so Meta does not retry it forever and nothing is
//! lost. [`parse`] never fails and never panics; the only input it cannot take is bytes that
//! are not JSON at all, which the HTTP layer answers with 400 before calling it.
//!
//! Shapes follow Meta's Cloud API webhook reference and what real payloads show
//! (`../shared/reference/platform-apis.md` A1.3, A1.11): calls on `field: "calls"`, messages and
//! their statuses on `field: "messages"`, call statuses as `statuses[]` with `type: "call"`.

use std::collections::HashMap;

use call_core::CallDirection;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{
    Bsuid, BusinessNumber, CallConnect, CallStatusKind, CallStatusUpdate, CallTerminate, Contact,
    DeliveryStatus, EventBody, InboundEvent, InboundMessage, Media, MessageContent, MessageContext,
    MessageStatusUpdate, PermissionResponse, PhoneNumberId, Private, SdpAnswer, SdpOffer,
    SessionDescription, SharedContact, TerminateStatus, UnknownEvent, WaCallId, WaId, WamId,
    WhatsAppError,
};

/// The `object` of WhatsApp Business Account webhooks.
const WABA_OBJECT: &str = "whatsapp_business_account";

/// Turns a webhook body (already known to be JSON) into events, one per element.
pub fn parse(body: &Value) -> Vec<InboundEvent> {
    let mut events = Vec::new();
    let envelope = match WireEnvelope::deserialize(body) {
        Ok(envelope) if envelope.object.as_deref() == Some(WABA_OBJECT) => envelope,
        Ok(envelope) => {
            let reason = match envelope.object {
                Some(object) => format!("object is {object:?}, not {WABA_OBJECT:?}"),
                None => "no `object` field".to_owned(),
            };
            events.push(unknown(
                BusinessNumber::default(),
                "envelope",
                reason,
                body.clone(),
            ));
            return events;
        }
        Err(err) => {
            events.push(unknown(
                BusinessNumber::default(),
                "envelope",
                format!("not a webhook envelope: {}", describe(&err)),
                body.clone(),
            ));
            return events;
        }
    };

    for entry in envelope.entry {
        let account_id = entry.id.as_ref().map(id_to_string);
        for change in entry.changes {
            parse_change(account_id.clone(), change, &mut events);
        }
    }
    if events.is_empty() {
        // An envelope with nothing in it is still recorded: it is odd enough to keep.
        events.push(unknown(
            BusinessNumber::default(),
            "envelope",
            "no entries or changes".to_owned(),
            body.clone(),
        ));
    }
    events
}

fn parse_change(account_id: Option<String>, change: WireChange, out: &mut Vec<InboundEvent>) {
    let field = change.field.unwrap_or_else(|| "<missing>".to_owned());
    let business = BusinessNumber {
        account_id,
        ..BusinessNumber::default()
    };
    let value = match WireValue::deserialize(&change.value) {
        Ok(value) => value,
        Err(err) => {
            out.push(unknown(
                business,
                &field,
                format!("change value does not parse: {}", describe(&err)),
                change.value,
            ));
            return;
        }
    };
    let business = BusinessNumber {
        phone_number_id: value
            .metadata
            .as_ref()
            .and_then(|m| m.phone_number_id.as_ref())
            .and_then(|id| PhoneNumberId::parse(&id_to_string(id)).ok()),
        display_phone_number: value
            .metadata
            .as_ref()
            .and_then(|m| m.display_phone_number.clone()),
        ..business
    };
    let contacts = Contacts::new(&value.contacts);
    let before = out.len();

    match field.as_str() {
        "calls" | "messages" => {
            for call in &value.calls {
                out.push(event_or_unknown(&business, &field, call, |raw| {
                    parse_call(raw, &value.errors, &contacts)
                }));
            }
            for message in &value.messages {
                out.push(event_or_unknown(&business, &field, message, |raw| {
                    parse_message(raw, &contacts)
                }));
            }
            for status in &value.statuses {
                out.push(event_or_unknown(&business, &field, status, |raw| {
                    parse_status(raw, &field, &contacts)
                }));
            }
            if out.len() == before {
                out.push(unknown(
                    business,
                    &field,
                    "no calls, messages or statuses in the change".to_owned(),
                    change.value,
                ));
            }
        }
        _ => out.push(unknown(
            business,
            &field,
            "webhook field not handled".to_owned(),
            change.value,
        )),
    }
}

fn event_or_unknown(
    business: &BusinessNumber,
    field: &str,
    raw: &Value,
    parse: impl FnOnce(&Value) -> Result<(Option<Contact>, EventBody), String>,
) -> InboundEvent {
    match parse(raw) {
        Ok((contact, body)) => InboundEvent {
            business: business.clone(),
            contact,
            body,
        },
        Err(reason) => unknown(business.clone(), field, reason, raw.clone()),
    }
}

fn unknown(business: BusinessNumber, field: &str, reason: String, raw: Value) -> InboundEvent {
    InboundEvent {
        business,
        contact: None,
        body: EventBody::Unknown(UnknownEvent {
            field: field.to_owned(),
            reason,
            raw,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

fn parse_call(
    raw: &Value,
    value_errors: &[Value],
    contacts: &Contacts,
) -> Result<(Option<Contact>, EventBody), String> {
    let call: WireCall = from_value(raw, "call")?;
    let call_id = WaCallId::parse(&call.id).map_err(|e| e.to_string())?;
    let from = optional_wa_id(call.from.as_deref(), "from")?;
    let to = optional_wa_id(call.to.as_deref(), "to")?;
    let session = call.session.map(parse_session).transpose()?;
    let direction = match call.direction.as_deref() {
        Some("USER_INITIATED") => CallDirection::Inbound,
        Some("BUSINESS_INITIATED") => CallDirection::Outbound,
        Some(other) => return Err(format!("unknown call direction {other:?}")),
        // Older payloads omit the direction: the SDP type tells (the caller offers).
        None => match session {
            Some(SessionDescription::Answer(_)) => CallDirection::Outbound,
            Some(SessionDescription::Offer(_)) | None => CallDirection::Inbound,
        },
    };
    let (user, user_id) = match direction {
        CallDirection::Inbound => (from.as_ref(), call.from_user_id.as_deref()),
        CallDirection::Outbound => (to.as_ref(), call.to_user_id.as_deref()),
    };
    let contact = contacts.find(user, user_id)?;
    let timestamp = call.timestamp.as_ref().and_then(unix_time);

    let body = match call.event.as_deref() {
        Some("connect") => EventBody::CallConnect(CallConnect {
            call_id,
            direction,
            from,
            to,
            timestamp,
            session,
            biz_opaque_callback_data: call.biz_opaque_callback_data,
            deeplink_payload: call.deeplink_payload,
            cta_payload: call.cta_payload,
        }),
        Some("terminate") => {
            let status = match call.status.as_deref() {
                Some("COMPLETED") => TerminateStatus::Completed,
                Some("FAILED") => TerminateStatus::Failed,
                Some("REJECTED") => TerminateStatus::Rejected,
                other => TerminateStatus::Other(other.map(str::to_owned)),
            };
            let mut errors = wire_errors(&call.errors);
            // Meta puts a FAILED call's errors in the call object and at value level.
            for error in wire_errors_from_values(value_errors) {
                if !errors.contains(&error) {
                    errors.push(error);
                }
            }
            EventBody::CallTerminate(CallTerminate {
                call_id,
                direction,
                from,
                to,
                timestamp,
                status,
                start_time: call.start_time.as_ref().and_then(unix_time),
                end_time: call.end_time.as_ref().and_then(unix_time),
                duration_secs: call.duration.as_ref().and_then(integer),
                biz_opaque_callback_data: call.biz_opaque_callback_data,
                errors,
            })
        }
        Some(other) => return Err(format!("unknown call event {other:?}")),
        None => return Err("call without `event`".to_owned()),
    };
    Ok((contact, body))
}

fn parse_session(session: WireSession) -> Result<SessionDescription, String> {
    let sdp = session.sdp.ok_or("call session without `sdp`")?;
    match session.sdp_type.as_deref() {
        Some("offer") => Ok(SessionDescription::Offer(SdpOffer(sdp))),
        Some("answer") => Ok(SessionDescription::Answer(SdpAnswer(sdp))),
        Some(other) => Err(format!("unknown sdp_type {other:?}")),
        None => Err("call session without `sdp_type`".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Statuses (message delivery and business-initiated call progress share `statuses[]`)
// ---------------------------------------------------------------------------------------------

fn parse_status(
    raw: &Value,
    field: &str,
    contacts: &Contacts,
) -> Result<(Option<Contact>, EventBody), String> {
    let status: WireStatus = from_value(raw, "status")?;
    let recipient = optional_wa_id(status.recipient_id.as_deref(), "recipient_id")?;
    let recipient_user_id = status.recipient_user_id.as_deref();
    let contact = contacts.find(recipient.as_ref(), recipient_user_id)?;
    let timestamp = status.timestamp.as_ref().and_then(unix_time);
    let errors = wire_errors(&status.errors);

    let body = if field == "calls" || status.kind.as_deref() == Some("call") {
        let call_id = WaCallId::parse(&status.id).map_err(|e| e.to_string())?;
        let kind = match status.status.as_str() {
            "RINGING" => CallStatusKind::Ringing,
            "ACCEPTED" => CallStatusKind::Accepted,
            "REJECTED" => CallStatusKind::Rejected,
            other => CallStatusKind::Other(other.to_owned()),
        };
        EventBody::CallStatus(CallStatusUpdate {
            call_id,
            status: kind,
            recipient,
            timestamp,
            biz_opaque_callback_data: status.biz_opaque_callback_data,
            errors,
        })
    } else {
        let message_id = WamId::parse(&status.id).map_err(|e| e.to_string())?;
        let delivery = DeliveryStatus::from_wire(&status.status)
            .ok_or_else(|| format!("unknown message status {:?}", status.status))?;
        let billing = match (status.pricing, status.conversation) {
            (None, None) => None,
            (pricing, conversation) => Some(serde_json::json!({
                "pricing": pricing,
                "conversation": conversation,
            })),
        };
        EventBody::MessageStatus(MessageStatusUpdate {
            message_id,
            status: delivery,
            recipient,
            recipient_user_id: recipient_user_id.and_then(|id| Bsuid::parse(id).ok()),
            timestamp,
            errors,
            billing,
            biz_opaque_callback_data: status.biz_opaque_callback_data,
        })
    };
    Ok((contact, body))
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

fn parse_message(raw: &Value, contacts: &Contacts) -> Result<(Option<Contact>, EventBody), String> {
    let message: WireMessage = from_value(raw, "message")?;
    let id = WamId::parse(&message.id).map_err(|e| e.to_string())?;
    let from = optional_wa_id(message.from.as_deref(), "from")?;
    let from_user_id = message
        .from_user_id
        .as_deref()
        .map(Bsuid::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let contact = contacts.find(from.as_ref(), from_user_id.as_ref().map(Bsuid::as_str))?;
    let content = message_content(&message, raw)?;
    let context = message.context.map(|c| MessageContext {
        id: c.id,
        from: c.from,
        forwarded: c.forwarded.unwrap_or(false),
        frequently_forwarded: c.frequently_forwarded.unwrap_or(false),
    });
    Ok((
        contact,
        EventBody::Message(InboundMessage {
            id,
            from,
            from_user_id,
            timestamp: message.timestamp.as_ref().and_then(unix_time),
            context,
            content,
        }),
    ))
}

fn message_content(message: &WireMessage, raw: &Value) -> Result<MessageContent, String> {
    let kind = message.kind.as_str();
    let missing = || format!("{kind} message without its `{kind}` object");
    let media = |m: &Option<WireMedia>| -> Result<Media, String> {
        let m = m.as_ref().ok_or_else(missing)?;
        Ok(Media {
            id: m
                .id
                .clone()
                .ok_or_else(|| format!("{kind} without media id"))?,
            mime_type: m.mime_type.clone(),
            sha256: m.sha256.clone(),
            url: m.url.clone(),
        })
    };
    let caption = |m: &Option<WireMedia>| m.as_ref().and_then(|m| m.caption.clone()).map(Private);

    Ok(match kind {
        "text" => MessageContent::Text {
            body: Private(
                message
                    .text
                    .as_ref()
                    .and_then(|t| t.body.clone())
                    .ok_or_else(missing)?,
            ),
        },
        "audio" | "voice" => {
            let wire = if kind == "voice" {
                &message.voice
            } else {
                &message.audio
            };
            MessageContent::Audio {
                media: media(wire)?,
                voice: kind == "voice" || wire.as_ref().and_then(|m| m.voice).unwrap_or(false),
            }
        }
        "image" => MessageContent::Image {
            media: media(&message.image)?,
            caption: caption(&message.image),
        },
        "video" => MessageContent::Video {
            media: media(&message.video)?,
            caption: caption(&message.video),
        },
        "document" => MessageContent::Document {
            media: media(&message.document)?,
            caption: caption(&message.document),
            filename: message
                .document
                .as_ref()
                .and_then(|d| d.filename.clone())
                .map(Private),
        },
        "sticker" => MessageContent::Sticker {
            media: media(&message.sticker)?,
            animated: message
                .sticker
                .as_ref()
                .and_then(|s| s.animated)
                .unwrap_or(false),
        },
        "location" => {
            let location = message.location.as_ref().ok_or_else(missing)?;
            MessageContent::Location {
                latitude: location.latitude.as_ref().and_then(number),
                longitude: location.longitude.as_ref().and_then(number),
                name: location.name.clone().map(Private),
                address: location.address.clone().map(Private),
                url: location.url.clone(),
            }
        }
        "contacts" => MessageContent::Contacts {
            contacts: message
                .contacts
                .as_ref()
                .ok_or_else(missing)?
                .iter()
                .map(|card| SharedContact {
                    formatted_name: card
                        .name
                        .as_ref()
                        .and_then(|n| n.formatted_name.clone())
                        .map(Private),
                    phones: card
                        .phones
                        .iter()
                        .filter_map(|p| p.phone.clone().or_else(|| p.wa_id.clone()))
                        .map(Private)
                        .collect(),
                })
                .collect(),
        },
        "reaction" => {
            let reaction = message.reaction.as_ref().ok_or_else(missing)?;
            MessageContent::Reaction {
                message_id: reaction.message_id.clone(),
                // An empty emoji, like a missing one, removes the reaction.
                emoji: reaction.emoji.clone().filter(|e| !e.is_empty()),
            }
        }
        "interactive" => interactive_content(message.interactive.as_ref().ok_or_else(missing)?)?,
        "button" => {
            let button = message.button.as_ref().ok_or_else(missing)?;
            MessageContent::TemplateButton {
                payload: button.payload.clone(),
                text: button.text.clone().map(Private),
            }
        }
        "order" => MessageContent::Order {
            details: message.order.clone().ok_or_else(missing)?,
        },
        "system" => {
            let system = message.system.as_ref().ok_or_else(missing)?;
            MessageContent::System {
                kind: system.kind.clone(),
                body: system.body.clone().map(Private),
                new_wa_id: system.wa_id.clone().or_else(|| system.new_wa_id.clone()),
            }
        }
        "edit" => MessageContent::Edit {
            details: message.edit.clone().unwrap_or(Value::Null),
        },
        "revoke" => MessageContent::Revoke {
            original_id: message
                .revoke
                .as_ref()
                .and_then(|r| r.original_message_id.clone()),
        },
        "request_welcome" => MessageContent::RequestWelcome,
        "unsupported" => MessageContent::Unsupported {
            kind: message.unsupported.as_ref().and_then(|u| u.kind.clone()),
            errors: wire_errors(&message.errors),
        },
        other => MessageContent::Other {
            kind: other.to_owned(),
            raw: raw.clone(),
        },
    })
}

fn interactive_content(interactive: &WireInteractive) -> Result<MessageContent, String> {
    let kind = interactive.kind.as_deref().unwrap_or("<missing>");
    let missing = || format!("interactive {kind} without its `{kind}` object");
    Ok(match kind {
        "button_reply" => {
            let reply = interactive.button_reply.as_ref().ok_or_else(missing)?;
            MessageContent::ButtonReply {
                id: reply.id.clone().unwrap_or_default(),
                title: Private(reply.title.clone().unwrap_or_default()),
            }
        }
        "list_reply" => {
            let reply = interactive.list_reply.as_ref().ok_or_else(missing)?;
            MessageContent::ListReply {
                id: reply.id.clone().unwrap_or_default(),
                title: Private(reply.title.clone().unwrap_or_default()),
                description: reply.description.clone().map(Private),
            }
        }
        "call_permission_reply" => {
            let reply = interactive
                .call_permission_reply
                .as_ref()
                .ok_or_else(missing)?;
            MessageContent::CallPermissionReply {
                response: match reply.response.as_deref() {
                    Some("accept") => PermissionResponse::Accept,
                    Some("reject") => PermissionResponse::Reject,
                    other => PermissionResponse::Other(other.unwrap_or_default().to_owned()),
                },
                expires_at: reply.expiration_timestamp.as_ref().and_then(unix_time),
                is_permanent: reply.is_permanent.unwrap_or(false),
                response_source: reply.response_source.clone(),
            }
        }
        "nfm_reply" => {
            let reply = interactive.nfm_reply.as_ref().ok_or_else(missing)?;
            MessageContent::FlowReply {
                name: reply.name.clone(),
                body: reply.body.clone().map(Private),
                response_json: reply.response_json.clone().map(Private),
            }
        }
        other => return Err(format!("unknown interactive type {other:?}")),
    })
}

// ---------------------------------------------------------------------------------------------
// Contacts
// ---------------------------------------------------------------------------------------------

/// `value.contacts[]`, looked up by the user an element is about.
struct Contacts(Vec<Contact>);

impl Contacts {
    fn new(raw: &[Value]) -> Self {
        let contacts = raw
            .iter()
            .filter_map(|c| WireContact::deserialize(c).ok())
            .map(|c| Contact {
                wa_id: c.wa_id.as_deref().and_then(|id| WaId::parse(id).ok()),
                user_id: c.user_id.as_deref().and_then(|id| Bsuid::parse(id).ok()),
                parent_user_id: c.parent_user_id,
                name: c.profile.as_ref().and_then(|p| p.name.clone()).map(Private),
                username: c.profile.and_then(|p| p.username),
            })
            .collect();
        Self(contacts)
    }

    /// The contact for a user given by WhatsApp id and/or BSUID. A webhook's `contacts[]` may
    /// describe the user; when it does not, the ids on the element itself make the contact.
    fn find(&self, wa_id: Option<&WaId>, user_id: Option<&str>) -> Result<Option<Contact>, String> {
        let user_id = user_id
            .map(Bsuid::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        let by_wa_id: HashMap<&str, &Contact> = self
            .0
            .iter()
            .filter_map(|c| c.wa_id.as_ref().map(|id| (id.as_str(), c)))
            .collect();
        let found = wa_id
            .and_then(|id| by_wa_id.get(id.as_str()).copied())
            .or_else(|| {
                user_id
                    .as_ref()
                    .and_then(|uid| self.0.iter().find(|c| c.user_id.as_ref() == Some(uid)))
            });
        let mut contact = match found {
            Some(contact) => contact.clone(),
            None if wa_id.is_none() && user_id.is_none() => return Ok(None),
            None => Contact::default(),
        };
        if contact.wa_id.is_none() {
            contact.wa_id = wa_id.cloned();
        }
        if contact.user_id.is_none() {
            contact.user_id = user_id;
        }
        Ok(Some(contact))
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

fn from_value<T: DeserializeOwned>(raw: &Value, what: &str) -> Result<T, String> {
    // `&Value` is a deserializer: no copy of the tree.
    T::deserialize(raw).map_err(|e| format!("{what} does not parse: {}", describe(&e)))
}

/// A serde error without the values it quotes: `invalid type: string "…", expected …`. Reasons
/// are logged and a quoted value may be a message body or a phone number.
fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    for c in text.chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                quoted = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

fn optional_wa_id(value: Option<&str>, field: &str) -> Result<Option<WaId>, String> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| WaId::parse(v).map_err(|e| format!("`{field}`: {e}")))
        .transpose()
}

/// Unix seconds, as a string (what Meta sends) or a number (what some fixtures have).
fn unix_time(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(integer(value)?, 0)
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Ids that some payloads send as numbers and others as strings.
fn id_to_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::Array(_)
        | Value::Object(_)) => other.to_string(),
    }
}

fn wire_errors(errors: &[WireError]) -> Vec<WhatsAppError> {
    errors
        .iter()
        .map(|e| WhatsAppError {
            code: e.code.as_ref().and_then(integer),
            title: e.title.clone(),
            message: e.message.clone(),
            details: e.error_data.as_ref().and_then(|d| d.details.clone()),
        })
        .collect()
}

fn wire_errors_from_values(errors: &[Value]) -> Vec<WhatsAppError> {
    let parsed: Vec<WireError> = errors
        .iter()
        .filter_map(|e| WireError::deserialize(e).ok())
        .collect();
    wire_errors(&parsed)
}

// ---------------------------------------------------------------------------------------------
// Wire structs: Meta's field names, everything optional that real payloads omit.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct WireEnvelope {
    object: Option<String>,
    #[serde(default)]
    entry: Vec<WireEntry>,
}

#[derive(Deserialize)]
struct WireEntry {
    id: Option<Value>,
    #[serde(default)]
    changes: Vec<WireChange>,
}

#[derive(Deserialize)]
struct WireChange {
    field: Option<String>,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct WireValue {
    metadata: Option<WireMetadata>,
    #[serde(default)]
    contacts: Vec<Value>,
    #[serde(default)]
    calls: Vec<Value>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    statuses: Vec<Value>,
    #[serde(default)]
    errors: Vec<Value>,
}

#[derive(Deserialize)]
struct WireMetadata {
    display_phone_number: Option<String>,
    phone_number_id: Option<Value>,
}

#[derive(Deserialize)]
struct WireContact {
    wa_id: Option<String>,
    user_id: Option<String>,
    parent_user_id: Option<String>,
    profile: Option<WireProfile>,
}

#[derive(Deserialize)]
struct WireProfile {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    code: Option<Value>,
    title: Option<String>,
    message: Option<String>,
    error_data: Option<WireErrorData>,
}

#[derive(Deserialize)]
struct WireErrorData {
    details: Option<String>,
}

#[derive(Deserialize)]
struct WireCall {
    id: String,
    event: Option<String>,
    direction: Option<String>,
    from: Option<String>,
    to: Option<String>,
    from_user_id: Option<String>,
    to_user_id: Option<String>,
    timestamp: Option<Value>,
    session: Option<WireSession>,
    status: Option<String>,
    start_time: Option<Value>,
    end_time: Option<Value>,
    duration: Option<Value>,
    biz_opaque_callback_data: Option<String>,
    deeplink_payload: Option<String>,
    cta_payload: Option<String>,
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireSession {
    sdp: Option<String>,
    sdp_type: Option<String>,
}

#[derive(Deserialize)]
struct WireStatus {
    id: String,
    status: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    timestamp: Option<Value>,
    recipient_id: Option<String>,
    recipient_user_id: Option<String>,
    biz_opaque_callback_data: Option<String>,
    pricing: Option<Value>,
    conversation: Option<Value>,
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireMessage {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    from: Option<String>,
    from_user_id: Option<String>,
    timestamp: Option<Value>,
    context: Option<WireContext>,
    text: Option<WireText>,
    audio: Option<WireMedia>,
    voice: Option<WireMedia>,
    image: Option<WireMedia>,
    video: Option<WireMedia>,
    document: Option<WireMedia>,
    sticker: Option<WireMedia>,
    location: Option<WireLocation>,
    contacts: Option<Vec<WireSharedContact>>,
    reaction: Option<WireReaction>,
    interactive: Option<WireInteractive>,
    button: Option<WireButton>,
    order: Option<Value>,
    system: Option<WireSystem>,
    edit: Option<Value>,
    revoke: Option<WireRevoke>,
    unsupported: Option<WireUnsupported>,
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireContext {
    id: Option<String>,
    from: Option<String>,
    forwarded: Option<bool>,
    frequently_forwarded: Option<bool>,
}

#[derive(Deserialize)]
struct WireText {
    body: Option<String>,
}

#[derive(Deserialize)]
struct WireMedia {
    id: Option<String>,
    mime_type: Option<String>,
    sha256: Option<String>,
    url: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    voice: Option<bool>,
    animated: Option<bool>,
}

#[derive(Deserialize)]
struct WireLocation {
    latitude: Option<Value>,
    longitude: Option<Value>,
    name: Option<String>,
    address: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct WireSharedContact {
    name: Option<WireContactName>,
    #[serde(default)]
    phones: Vec<WireContactPhone>,
}

#[derive(Deserialize)]
struct WireContactName {
    formatted_name: Option<String>,
}

#[derive(Deserialize)]
struct WireContactPhone {
    phone: Option<String>,
    wa_id: Option<String>,
}

#[derive(Deserialize)]
struct WireReaction {
    message_id: Option<String>,
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct WireInteractive {
    #[serde(rename = "type")]
    kind: Option<String>,
    button_reply: Option<WireReply>,
    list_reply: Option<WireReply>,
    call_permission_reply: Option<WirePermissionReply>,
    nfm_reply: Option<WireFlowReply>,
}

#[derive(Deserialize)]
struct WireReply {
    id: Option<String>,
    title: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct WirePermissionReply {
    response: Option<String>,
    expiration_timestamp: Option<Value>,
    is_permanent: Option<bool>,
    response_source: Option<String>,
}

#[derive(Deserialize)]
struct WireFlowReply {
    name: Option<String>,
    body: Option<String>,
    response_json: Option<String>,
}

#[derive(Deserialize)]
struct WireButton {
    payload: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireSystem {
    #[serde(rename = "type")]
    kind: Option<String>,
    body: Option<String>,
    wa_id: Option<String>,
    new_wa_id: Option<String>,
}

#[derive(Deserialize)]
struct WireRevoke {
    original_message_id: Option<String>,
}

#[derive(Deserialize)]
struct WireUnsupported {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn change(field: &str, value: Value) -> Value {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": value}]}]
        })
    }

    fn metadata() -> Value {
        json!({"display_phone_number": "15550783881", "phone_number_id": "106540352242922"})
    }

    #[test]
    fn every_entry_change_and_element_becomes_an_event() {
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [
                {"id": "1", "changes": [
                    {"field": "messages", "value": {
                        "metadata": metadata(),
                        "messages": [
                            {"from": "16505551234", "id": "wamid.A", "timestamp": "1700000000", "type": "text", "text": {"body": "one"}},
                            {"from": "16505551234", "id": "wamid.B", "timestamp": "1700000001", "type": "text", "text": {"body": "two"}}
                        ]
                    }},
                    {"field": "messages", "value": {
                        "metadata": metadata(),
                        "statuses": [{"id": "wamid.C", "status": "read", "timestamp": "1700000002", "recipient_id": "16505551234"}]
                    }}
                ]},
                {"id": "2", "changes": [
                    {"field": "calls", "value": {
                        "metadata": metadata(),
                        "calls": [{"id": "wacid.X", "from": "16505551234", "to": "15550783881", "event": "terminate", "direction": "USER_INITIATED", "status": "COMPLETED", "duration": 12}]
                    }}
                ]}
            ]
        });
        let events = parse(&body);
        let kinds: Vec<_> = events.iter().map(|e| e.body.kind().as_str()).collect();
        assert_eq!(
            kinds,
            ["message", "message", "message_status", "call_terminate"]
        );
        assert_eq!(events[3].business.account_id.as_deref(), Some("2"));
    }

    #[test]
    fn one_broken_element_does_not_take_down_its_neighbours() {
        let body = change(
            "messages",
            json!({
                "metadata": metadata(),
                "messages": [
                    {"from": "not-a-number", "id": "wamid.bad", "type": "text", "text": {"body": "x"}},
                    {"from": "16505551234", "id": "wamid.good", "type": "text", "text": {"body": "y"}}
                ]
            }),
        );
        let events = parse(&body);
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[0].body, EventBody::Unknown(u) if u.reason.contains("WhatsApp id"))
        );
        assert!(matches!(&events[1].body, EventBody::Message(m) if m.id.as_str() == "wamid.good"));
    }

    #[test]
    fn a_removed_reaction_has_no_emoji() {
        for reaction in [
            json!({"message_id": "wamid.R"}),
            json!({"message_id": "wamid.R", "emoji": ""}),
        ] {
            let body = change(
                "messages",
                json!({"metadata": metadata(), "messages": [{"from": "16505551234", "id": "wamid.re", "type": "reaction", "reaction": reaction}]}),
            );
            let events = parse(&body);
            assert!(matches!(
                &events[0].body,
                EventBody::Message(InboundMessage {
                    content: MessageContent::Reaction { emoji: None, .. },
                    ..
                })
            ));
        }
    }

    #[test]
    fn reasons_do_not_quote_what_the_user_wrote() {
        let body = change(
            "messages",
            json!({"metadata": metadata(), "messages": [{"from": "16505551234", "id": "wamid.T", "type": "text", "text": "my secret plans"}]}),
        );
        let events = parse(&body);
        let EventBody::Unknown(unknown) = &events[0].body else {
            panic!("a text message without a text object is not understood")
        };
        assert!(
            unknown.reason.contains("invalid type"),
            "{}",
            unknown.reason
        );
        assert!(!unknown.reason.contains("secret"), "{}", unknown.reason);
    }

    #[test]
    fn non_webhook_json_is_one_unknown_event() {
        for body in [
            json!([]),
            json!({"hello": "world"}),
            json!({"object": "page", "entry": []}),
            json!(null),
        ] {
            let events = parse(&body);
            assert_eq!(events.len(), 1, "{body}");
            assert!(matches!(&events[0].body, EventBody::Unknown(u) if u.field == "envelope"));
        }
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let body = change(
            "messages",
            json!({"metadata": metadata(), "statuses": [
                {"id": "wamid.S", "status": "sent", "recipient_id": "16505551234"},
                {"id": "wamid.S", "status": "delivered", "recipient_id": "16505551234"}
            ]}),
        );
        let first: Vec<_> = parse(&body)
            .iter()
            .map(InboundEvent::idempotency_key)
            .collect();
        let again: Vec<_> = parse(&body)
            .iter()
            .map(InboundEvent::idempotency_key)
            .collect();
        assert_eq!(first, again);
        assert_eq!(
            first,
            [
                "message_status:wamid.S:sent",
                "message_status:wamid.S:delivered"
            ]
        );
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            prop_oneof![
                ".*",
                Just("whatsapp_business_account".to_owned()),
                Just("messages".to_owned()),
                Just("calls".to_owned()),
                Just("text".to_owned()),
                Just("interactive".to_owned()),
                Just("connect".to_owned()),
                Just("16505551234".to_owned()),
            ]
            .prop_map(Value::String),
        ];
        let keys = prop_oneof![
            Just("object".to_owned()),
            Just("entry".to_owned()),
            Just("changes".to_owned()),
            Just("field".to_owned()),
            Just("value".to_owned()),
            Just("messages".to_owned()),
            Just("statuses".to_owned()),
            Just("calls".to_owned()),
            Just("contacts".to_owned()),
            Just("id".to_owned()),
            Just("type".to_owned()),
            Just("from".to_owned()),
            Just("text".to_owned()),
            Just("body".to_owned()),
            Just("interactive".to_owned()),
            Just("event".to_owned()),
            Just("session".to_owned()),
            "[a-z_]{1,12}",
        ];
        leaf.prop_recursive(6, 96, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(keys.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON value parses into at least one event without panicking, and every event
        /// serialises and reads back (the store keeps events as JSON).
        #[test]
        fn any_json_parses_without_panic(value in arbitrary_json()) {
            let events = parse(&value);
            prop_assert!(!events.is_empty());
            for event in events {
                let _ = event.idempotency_key();
                let stored = serde_json::to_string(&event).expect("serialise");
                let back: InboundEvent = serde_json::from_str(&stored).expect("deserialise");
                prop_assert_eq!(back, event);
            }
        }

        /// Arbitrary bytes either fail JSON parsing (HTTP 400) or parse into events.
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                prop_assert!(!parse(&value).is_empty());
            }
        }

        /// Text messages with any body (emoji, RTL, control characters) keep their body.
        #[test]
        fn text_bodies_survive_any_content(text in "\\PC*", n in 1usize..5) {
            let messages: Vec<Value> = (0..n)
                .map(|i| json!({"from": "16505551234", "id": format!("wamid.{i}"), "type": "text", "text": {"body": text}}))
                .collect();
            let events = parse(&change("messages", json!({"metadata": metadata(), "messages": messages})));
            prop_assert_eq!(events.len(), n);
            for event in events {
                match event.body {
                    EventBody::Message(m) => prop_assert_eq!(m.content.text(), Some(text.as_str())),
                    other @ (EventBody::CallConnect(_) | EventBody::CallTerminate(_) | EventBody::CallStatus(_)
                    | EventBody::MessageStatus(_) | EventBody::Unknown(_)) => {
                        prop_assert!(false, "not a message: {:?}", other)
                    }
                }
            }
        }
    }
}
