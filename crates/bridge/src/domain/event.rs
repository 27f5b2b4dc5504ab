//! Inbound events: what a verified webhook told us, in our own types.
//!
//! `whatsapp::webhook` turns Meta's JSON into a list of [`InboundEvent`]s (one per call, message
//! and status in the payload, however many entries and changes it has). Each event has an
//! [`InboundEvent::idempotency_key`] that is stored once, so a redelivered webhook is a no-op.
//! Events are serialised into the store as JSON so that an event queued when the process
//! stopped can be processed after a restart.

use std::fmt;

use call_core::{CallDirection, EndReason};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::{Bsuid, PhoneNumberId, WaCallId, WaId, WamId};

/// Text a person wrote (message bodies, captions, titles). `Debug` hides it: message bodies
/// may only reach logs at debug level, and only on purpose.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Private<T>(pub T);

impl<T> fmt::Debug for Private<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Private(..)")
    }
}

/// One thing that happened, as reported by one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The business number the webhook was for (`value.metadata`).
    pub business: BusinessNumber,
    /// The WhatsApp user the event is about, with what the webhook's `contacts[]` said of them.
    pub contact: Option<Contact>,
    /// What happened.
    pub body: EventBody,
}

/// The business phone number an event was addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BusinessNumber {
    /// `metadata.phone_number_id`: routes the event to the number it belongs to.
    pub phone_number_id: Option<PhoneNumberId>,
    /// `metadata.display_phone_number`, as shown to users.
    pub display_phone_number: Option<String>,
    /// `entry[].id`: the WhatsApp Business Account id (not always numeric).
    pub account_id: Option<String>,
}

/// A WhatsApp user as a webhook describes them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Contact {
    /// The phone-number id; absent for users who hide their number behind a username.
    pub wa_id: Option<WaId>,
    /// The business-scoped user id (BSUID).
    pub user_id: Option<Bsuid>,
    /// The parent BSUID for managed accounts.
    pub parent_user_id: Option<String>,
    /// The profile name.
    pub name: Option<Private<String>>,
    /// The WhatsApp username, when the user has one.
    pub username: Option<String>,
}

impl Contact {
    /// Whether the contact names a user we can key rows by.
    pub fn is_identified(&self) -> bool {
        self.wa_id.is_some() || self.user_id.is_some()
    }
}

/// What an event says happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A call's `connect`: an inbound offer, or the callee's answer to our outbound call.
    CallConnect(CallConnect),
    /// A call's `terminate`.
    CallTerminate(CallTerminate),
    /// A business-initiated call's status (`RINGING`, `ACCEPTED`, `REJECTED`).
    CallStatus(CallStatusUpdate),
    /// A message from a user, of any type.
    Message(InboundMessage),
    /// A delivery status of a message we sent.
    MessageStatus(MessageStatusUpdate),
    /// Anything we could not (or do not) interpret: recorded, answered 200, logged once.
    Unknown(UnknownEvent),
}

impl EventBody {
    /// The stable name of the event's kind: a metric label and a database value.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::CallConnect(_) => EventKind::CallConnect,
            EventBody::CallTerminate(_) => EventKind::CallTerminate,
            EventBody::CallStatus(_) => EventKind::CallStatus,
            EventBody::Message(_) => EventKind::Message,
            EventBody::MessageStatus(_) => EventKind::MessageStatus,
            EventBody::Unknown(_) => EventKind::Unknown,
        }
    }
}

/// The kinds of event, as stored and as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// See [`EventBody::CallConnect`].
    CallConnect,
    /// See [`EventBody::CallTerminate`].
    CallTerminate,
    /// See [`EventBody::CallStatus`].
    CallStatus,
    /// See [`EventBody::Message`].
    Message,
    /// See [`EventBody::MessageStatus`].
    MessageStatus,
    /// See [`EventBody::Unknown`].
    Unknown,
}

impl EventKind {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [EventKind; 6] = [
        EventKind::CallConnect,
        EventKind::CallTerminate,
        EventKind::CallStatus,
        EventKind::Message,
        EventKind::MessageStatus,
        EventKind::Unknown,
    ];

    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallConnect => "call_connect",
            EventKind::CallTerminate => "call_terminate",
            EventKind::CallStatus => "call_status",
            EventKind::Message => "message",
            EventKind::MessageStatus => "message_status",
            EventKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl InboundEvent {
    /// The key under which this event is stored once. Redeliveries produce the same key:
    /// a message by its wamid, a status by wamid and status, a call event by call id and event
    /// (and status), an unknown shape by a hash of its content.
    pub fn idempotency_key(&self) -> String {
        match &self.body {
            EventBody::CallConnect(c) => format!("call:{}:connect", c.call_id),
            EventBody::CallTerminate(c) => format!("call:{}:terminate", c.call_id),
            EventBody::CallStatus(s) => {
                format!("call:{}:status:{}", s.call_id, s.status.as_wire())
            }
            EventBody::Message(m) => format!("message:{}", m.id),
            EventBody::MessageStatus(s) => {
                format!("message_status:{}:{}", s.message_id, s.status.as_wire())
            }
            EventBody::Unknown(u) => {
                let mut hash = Sha256::new();
                hash.update(u.field.as_bytes());
                hash.update([0]);
                hash.update(u.raw.to_string().as_bytes());
                format!("unknown:{}", hex::encode(hash.finalize()))
            }
        }
    }
}

/// The SDP a call's `connect` carries, typed by what it is so an offer is never applied as an
/// answer. The text is not checked here; the call engine parses it and rejects the call cleanly
/// if it is broken (docs put the placeholder `<<RFC 8866 SDP>>` where real payloads have SDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sdp_type", content = "sdp", rename_all = "snake_case")]
pub enum SessionDescription {
    /// The caller's offer (user-initiated calls).
    Offer(SdpOffer),
    /// The callee's answer (business-initiated calls).
    Answer(SdpAnswer),
}

/// An SDP offer, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SdpOffer(pub String);

/// An SDP answer, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SdpAnswer(pub String);

/// An error object as WhatsApp reports it in webhooks (`errors[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsAppError {
    /// The numeric code (e.g. 138021: no media received for a long time).
    pub code: Option<i64>,
    /// The short title.
    pub title: Option<String>,
    /// The message.
    pub message: Option<String>,
    /// `error_data.details`.
    pub details: Option<String>,
}

/// A call's `connect` webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallConnect {
    /// The call.
    pub call_id: WaCallId,
    /// Who started the call.
    #[serde(with = "direction")]
    pub direction: CallDirection,
    /// `from`: the caller (the user for inbound calls).
    pub from: Option<WaId>,
    /// `to`: the callee (the user for outbound calls).
    pub to: Option<WaId>,
    /// When WhatsApp says it happened.
    pub timestamp: Option<DateTime<Utc>>,
    /// The SDP: an offer on inbound calls, an answer on outbound ones.
    pub session: Option<SessionDescription>,
    /// The tracking string we passed on `connect` (our call id for outbound calls).
    pub biz_opaque_callback_data: Option<String>,
    /// Payload of the deep link the user called from, if any.
    pub deeplink_payload: Option<String>,
    /// Payload of the call-to-action button the user called from, if any.
    pub cta_payload: Option<String>,
}

/// How WhatsApp says a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateStatus {
    /// `COMPLETED`.
    Completed,
    /// `FAILED`.
    Failed,
    /// `REJECTED` (some clients model it).
    Rejected,
    /// A value not known when this was written, or none.
    Other(Option<String>),
}

/// A call's `terminate` webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallTerminate {
    /// The call.
    pub call_id: WaCallId,
    /// Who started the call.
    #[serde(with = "direction")]
    pub direction: CallDirection,
    /// `from`.
    pub from: Option<WaId>,
    /// `to`.
    pub to: Option<WaId>,
    /// When WhatsApp says it happened.
    pub timestamp: Option<DateTime<Utc>>,
    /// How it ended.
    pub status: TerminateStatus,
    /// When media started, if the call was picked up.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// Seconds of conversation, if the call was picked up.
    pub duration_secs: Option<i64>,
    /// The tracking string we passed on `connect`/`accept`.
    pub biz_opaque_callback_data: Option<String>,
    /// Errors inside the call object and at `value` level.
    pub errors: Vec<WhatsAppError>,
}

impl CallTerminate {
    /// How the call ended, as our records name it.
    pub fn end_reason(&self) -> EndReason {
        match self.status {
            TerminateStatus::Completed => EndReason::Completed,
            TerminateStatus::Rejected => EndReason::Rejected,
            TerminateStatus::Failed | TerminateStatus::Other(_) => EndReason::Failed,
        }
    }

    /// WhatsApp's error code, if it reported one (138021: no media for too long, ...).
    pub fn error_code(&self) -> Option<i64> {
        self.errors.iter().find_map(|e| e.code)
    }
}

/// A business-initiated call's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatusKind {
    /// `RINGING`.
    Ringing,
    /// `ACCEPTED`.
    Accepted,
    /// `REJECTED`.
    Rejected,
    /// A value not known when this was written.
    Other(String),
}

impl CallStatusKind {
    /// The value as WhatsApp writes it.
    pub fn as_wire(&self) -> &str {
        match self {
            CallStatusKind::Ringing => "RINGING",
            CallStatusKind::Accepted => "ACCEPTED",
            CallStatusKind::Rejected => "REJECTED",
            CallStatusKind::Other(other) => other,
        }
    }
}

/// A call status webhook (`statuses[]` with `type: "call"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStatusUpdate {
    /// The call.
    pub call_id: WaCallId,
    /// The status.
    pub status: CallStatusKind,
    /// The callee.
    pub recipient: Option<WaId>,
    /// When WhatsApp says it happened.
    pub timestamp: Option<DateTime<Utc>>,
    /// The tracking string we passed on `connect`.
    pub biz_opaque_callback_data: Option<String>,
    /// Errors reported with the status.
    pub errors: Vec<WhatsAppError>,
}

/// A message from a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The message id.
    pub id: WamId,
    /// The sender's WhatsApp id (absent for username-only users).
    pub from: Option<WaId>,
    /// The sender's BSUID.
    pub from_user_id: Option<Bsuid>,
    /// When the user sent it.
    pub timestamp: Option<DateTime<Utc>>,
    /// What it replies to or was forwarded from.
    pub context: Option<MessageContext>,
    /// The content, by type.
    pub content: MessageContent,
}

/// `messages[].context`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageContext {
    /// The message this one replies to (a wamid; for a call permission reply to a missed call,
    /// a call id).
    pub id: Option<String>,
    /// The quoted message's sender.
    pub from: Option<String>,
    /// Forwarded.
    pub forwarded: bool,
    /// Forwarded many times.
    pub frequently_forwarded: bool,
}

/// A media attachment: downloaded later through the Graph media endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// The media id (valid for 7 days).
    pub id: String,
    /// The MIME type (voice notes are `audio/ogg; codecs=opus`).
    pub mime_type: Option<String>,
    /// SHA-256 of the file.
    pub sha256: Option<String>,
    /// A direct URL, when the payload carries one.
    pub url: Option<String>,
}

/// A user's answer to our call permission request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionResponse {
    /// `accept`.
    Accept,
    /// `reject`.
    Reject,
    /// A value not known when this was written.
    Other(String),
}

/// A contact card shared in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedContact {
    /// `name.formatted_name`.
    pub formatted_name: Option<Private<String>>,
    /// The phone numbers on the card.
    pub phones: Vec<Private<String>>,
}

/// The content of a message, one variant per WhatsApp message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// `text`.
    Text {
        /// The text.
        body: Private<String>,
    },
    /// `audio`: a voice note (`voice: true`) or an audio file.
    Audio {
        /// The file.
        media: Media,
        /// Recorded in WhatsApp as a voice note.
        voice: bool,
    },
    /// `image`.
    Image {
        /// The file.
        media: Media,
        /// The caption.
        caption: Option<Private<String>>,
    },
    /// `video`.
    Video {
        /// The file.
        media: Media,
        /// The caption.
        caption: Option<Private<String>>,
    },
    /// `document`.
    Document {
        /// The file.
        media: Media,
        /// The caption.
        caption: Option<Private<String>>,
        /// The file name.
        filename: Option<Private<String>>,
    },
    /// `sticker`.
    Sticker {
        /// The file.
        media: Media,
        /// Animated sticker.
        animated: bool,
    },
    /// `location`.
    Location {
        /// Latitude.
        latitude: Option<f64>,
        /// Longitude.
        longitude: Option<f64>,
        /// Place name.
        name: Option<Private<String>>,
        /// Address.
        address: Option<Private<String>>,
        /// URL of the place.
        url: Option<String>,
    },
    /// `contacts`: contact cards.
    Contacts {
        /// The cards.
        contacts: Vec<SharedContact>,
    },
    /// `reaction`: an emoji on a message; `emoji: None` removes the reaction.
    Reaction {
        /// The message reacted to.
        message_id: Option<String>,
        /// The emoji, or none when the reaction was removed.
        emoji: Option<String>,
    },
    /// `interactive.button_reply`: the user tapped one of our reply buttons.
    ButtonReply {
        /// Our button id.
        id: String,
        /// The title shown.
        title: Private<String>,
    },
    /// `interactive.list_reply`: the user picked a row of our list.
    ListReply {
        /// Our row id.
        id: String,
        /// The title shown.
        title: Private<String>,
        /// The description shown.
        description: Option<Private<String>>,
    },
    /// `interactive.call_permission_reply`: the user answered our call permission request.
    CallPermissionReply {
        /// Accept or reject.
        response: PermissionResponse,
        /// When the permission expires (on accept, unless permanent).
        expires_at: Option<DateTime<Utc>>,
        /// The user granted permanent permission.
        is_permanent: bool,
        /// `user_action` or `automatic`.
        response_source: Option<String>,
    },
    /// `interactive.nfm_reply`: a WhatsApp Flow response.
    FlowReply {
        /// The flow name.
        name: Option<String>,
        /// The body text.
        body: Option<Private<String>>,
        /// The flow's response JSON, as a string.
        response_json: Option<Private<String>>,
    },
    /// `button`: a template's quick-reply button.
    TemplateButton {
        /// The payload we set on the button.
        payload: Option<String>,
        /// The button text.
        text: Option<Private<String>>,
    },
    /// `order`: a cart sent from a catalog.
    Order {
        /// The order object as received.
        details: serde_json::Value,
    },
    /// `system`: e.g. `user_changed_number`.
    System {
        /// The system message type.
        kind: Option<String>,
        /// The text (may contain U+200E marks).
        body: Option<Private<String>>,
        /// The new WhatsApp id after a number change.
        new_wa_id: Option<String>,
    },
    /// `edit`: the user edited an earlier message.
    Edit {
        /// The edit as received (it nests the edited message).
        details: serde_json::Value,
    },
    /// `revoke`: the user deleted an earlier message.
    Revoke {
        /// The deleted message's id.
        original_id: Option<String>,
    },
    /// `request_welcome`: the user opened the chat for the first time.
    RequestWelcome,
    /// `unsupported`: WhatsApp could not render it to us (e.g. a poll).
    Unsupported {
        /// `unsupported.type`, when given.
        kind: Option<String>,
        /// The errors WhatsApp attached.
        errors: Vec<WhatsAppError>,
    },
    /// A message type not known when this was written. Kept whole.
    Other {
        /// The `type` field.
        kind: String,
        /// The message as received.
        raw: serde_json::Value,
    },
}

impl MessageContent {
    /// The WhatsApp message type, as stored in `messages.kind`.
    pub fn kind(&self) -> &str {
        match self {
            MessageContent::Text { .. } => "text",
            MessageContent::Audio { .. } => "audio",
            MessageContent::Image { .. } => "image",
            MessageContent::Video { .. } => "video",
            MessageContent::Document { .. } => "document",
            MessageContent::Sticker { .. } => "sticker",
            MessageContent::Location { .. } => "location",
            MessageContent::Contacts { .. } => "contacts",
            MessageContent::Reaction { .. } => "reaction",
            MessageContent::ButtonReply { .. } => "button_reply",
            MessageContent::ListReply { .. } => "list_reply",
            MessageContent::CallPermissionReply { .. } => "call_permission_reply",
            MessageContent::FlowReply { .. } => "flow_reply",
            MessageContent::TemplateButton { .. } => "button",
            MessageContent::Order { .. } => "order",
            MessageContent::System { .. } => "system",
            MessageContent::Edit { .. } => "edit",
            MessageContent::Revoke { .. } => "revoke",
            MessageContent::RequestWelcome => "request_welcome",
            MessageContent::Unsupported { .. } => "unsupported",
            MessageContent::Other { kind, .. } => kind,
        }
    }

    /// The text a person would read as this message (text, caption, tapped title), if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            MessageContent::Text { body } => Some(&body.0),
            MessageContent::Image { caption, .. }
            | MessageContent::Video { caption, .. }
            | MessageContent::Document { caption, .. } => caption.as_ref().map(|c| c.0.as_str()),
            MessageContent::ButtonReply { title, .. } | MessageContent::ListReply { title, .. } => {
                Some(&title.0)
            }
            MessageContent::TemplateButton { text, .. } => text.as_ref().map(|t| t.0.as_str()),
            MessageContent::FlowReply { body, .. } | MessageContent::System { body, .. } => {
                body.as_ref().map(|b| b.0.as_str())
            }
            MessageContent::Reaction { emoji, .. } => emoji.as_deref(),
            MessageContent::Audio { .. }
            | MessageContent::Sticker { .. }
            | MessageContent::Location { .. }
            | MessageContent::Contacts { .. }
            | MessageContent::CallPermissionReply { .. }
            | MessageContent::Order { .. }
            | MessageContent::Edit { .. }
            | MessageContent::Revoke { .. }
            | MessageContent::RequestWelcome
            | MessageContent::Unsupported { .. }
            | MessageContent::Other { .. } => None,
        }
    }
}

/// A message delivery status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Our message was accepted by WhatsApp (stored for outbound rows before any status).
    Accepted,
    /// `sent`.
    Sent,
    /// `delivered`.
    Delivered,
    /// `read`.
    Read,
    /// `failed`.
    Failed,
    /// `deleted`.
    Deleted,
}

impl DeliveryStatus {
    /// Parses WhatsApp's status value.
    pub fn from_wire(value: &str) -> Option<Self> {
        Some(match value {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "failed" => DeliveryStatus::Failed,
            "deleted" => DeliveryStatus::Deleted,
            _ => return None,
        })
    }

    /// The value as WhatsApp writes it (and as stored).
    pub fn as_wire(self) -> &'static str {
        match self {
            DeliveryStatus::Accepted => "accepted",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Deleted => "deleted",
        }
    }

    /// Statuses arrive out of order (`read` before `delivered`); a status only replaces a lower
    /// one. `failed` and `deleted` are final whatever came before.
    pub fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Accepted => 0,
            DeliveryStatus::Sent => 1,
            DeliveryStatus::Delivered => 2,
            DeliveryStatus::Read => 3,
            DeliveryStatus::Failed | DeliveryStatus::Deleted => 4,
        }
    }
}

/// A status webhook for a message we sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageStatusUpdate {
    /// The message.
    pub message_id: WamId,
    /// The status.
    pub status: DeliveryStatus,
    /// The recipient.
    pub recipient: Option<WaId>,
    /// The recipient's BSUID.
    pub recipient_user_id: Option<Bsuid>,
    /// When it happened.
    pub timestamp: Option<DateTime<Utc>>,
    /// Errors (on `failed`).
    pub errors: Vec<WhatsAppError>,
    /// Pricing and conversation information, kept as received.
    pub billing: Option<serde_json::Value>,
    /// The tracking string we passed when sending.
    pub biz_opaque_callback_data: Option<String>,
}

/// Something a webhook carried that we did not interpret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownEvent {
    /// The change's `field` (`calls`, `messages`, `account_update`, ...) or `envelope` when the
    /// payload is not a WhatsApp Business Account webhook at all.
    pub field: String,
    /// Why it was not interpreted.
    pub reason: String,
    /// The part of the payload it came from.
    pub raw: serde_json::Value,
}

/// `CallDirection` as its stored name (the sans-IO core does not depend on serde).
mod direction {
    use call_core::CallDirection;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(direction: &CallDirection, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(direction.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CallDirection, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
