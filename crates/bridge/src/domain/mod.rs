//! Domain types: the only constructors of values with rules.
//!
//! Everything after the HTTP and webhook edges takes these types, never a bare `&str` phone
//! number or id. This module depends on nothing else in the crate; every other module depends
//! on it.

pub mod event;
pub mod ids;
pub mod records;

pub use event::{
    BusinessNumber, CallConnect, CallStatusKind, CallStatusUpdate, CallTerminate, Contact,
    DeliveryStatus, EventBody, EventKind, InboundEvent, InboundMessage, Media, MessageContent,
    MessageContext, MessageStatusUpdate, PermissionResponse, Private, SdpAnswer, SdpOffer,
    SessionDescription, SharedContact, TerminateStatus, UnknownEvent, WhatsAppError,
};
pub use ids::{Bsuid, InvalidId, PhoneNumberId, UserId, WaCallId, WaId, WamId};
pub use records::{
    CallChannel, InvalidValue, MessageDirection, PermissionStatus, ReminderStatus, Source,
    TaskPriority, TaskStatus,
};
