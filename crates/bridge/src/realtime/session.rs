//! The GA Realtime session object: what the model is told about the call before it starts
//! (instructions, voice, turn detection, transcription, tools).
//!
//! It is sent twice with the same shape: as `session` in `POST /realtime/client_secrets` (the
//! ephemeral key is bound to it) and, when needed, in a `session.update` on the data channel.
//! Only GA field names exist here (`shared/reference/platform-apis.md` A2.5): the Go
//! precedent sent the beta names (`modalities`, `voice`, `input_audio_transcription`,
//! top-level `turn_detection`) to the GA API, which does not apply them (its weakness 22).
//!
//! No `audio.input.format` / `audio.output.format`: over WebRTC the codec (Opus) is
//! negotiated in the SDP, and the format fields only describe the WebSocket's PCM.

use serde::Serialize;

use crate::config::{AiConfig, AiProvider, RealtimeConfig};

/// The built-in voices (`audio.output.voice`). A voice cannot change once the model has
/// spoken in a session.
pub const VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
];

/// A built-in voice name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Voice(String);

impl Voice {
    /// One of [`VOICES`] (case-insensitive).
    ///
    /// # Errors
    /// Any other name, with the list in the message.
    pub fn parse(name: &str) -> Result<Self, String> {
        let lower = name.trim().to_ascii_lowercase();
        if VOICES.contains(&lower.as_str()) {
            Ok(Self(lower))
        } else {
            Err(format!("is not a Realtime voice ({})", VOICES.join(", ")))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the model produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Speech (with its transcript).
    Audio,
    /// Text only.
    Text,
}

/// How the server decides the caller has finished a turn (`audio.input.turn_detection`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnDetection {
    /// Voice activity detection on loudness and silence: predictable on phone lines.
    ServerVad {
        /// Activation threshold, 0.0–1.0 (higher: needs louder speech; noisy lines).
        threshold: f64,
        /// Audio kept from before speech was detected, in ms.
        prefix_padding_ms: u32,
        /// Silence that ends a turn, in ms.
        silence_duration_ms: u32,
        /// After this much silence the model prompts the caller (fires
        /// `input_audio_buffer.timeout_triggered`); `None`: never.
        #[serde(skip_serializing_if = "Option::is_none")]
        idle_timeout_ms: Option<u32>,
        /// Answer when a turn ends.
        create_response: bool,
        /// Stop talking when the caller starts (barge-in).
        interrupt_response: bool,
    },
    /// A model judges whether the caller has finished: more natural, sometimes slower, and
    /// more prone to interrupting itself through speaker echo.
    SemanticVad {
        /// How soon it answers.
        eagerness: Eagerness,
        /// Answer when a turn ends.
        create_response: bool,
        /// Stop talking when the caller starts (barge-in).
        interrupt_response: bool,
    },
}

/// How eagerly `semantic_vad` ends a turn (waits at most 8 s / 4 s / 2 s; auto = medium).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Eagerness {
    /// Lets the caller finish.
    Low,
    /// In between.
    Medium,
    /// Answers quickly.
    High,
    /// The server's choice (medium).
    Auto,
}

impl Eagerness {
    /// Parses `low`, `medium`, `high` or `auto`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Eagerness::Low),
            "medium" => Some(Eagerness::Medium),
            "high" => Some(Eagerness::High),
            "auto" => Some(Eagerness::Auto),
            _ => None,
        }
    }
}

/// Input noise reduction (`audio.input.noise_reduction.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseReduction {
    /// Close-talking microphones: handsets, headsets (a phone call).
    NearField,
    /// Distant microphones: speakerphones, laptops, rooms.
    FarField,
}

/// A function the model may call (`tools[]` with `type: "function"`). Provider-neutral: the
/// tool registry maps its tools into this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionTool {
    /// The name the model calls it by.
    pub name: String,
    /// When and how to use it, for the model.
    pub description: String,
    /// The arguments' JSON Schema (an object schema).
    pub parameters: serde_json::Value,
}

/// A tool entry on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    /// A function.
    Function(FunctionTool),
}

/// Whether the model may call tools (`tool_choice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoice {
    /// When it decides to.
    Auto,
    /// Never.
    None,
    /// In every response.
    Required,
}

/// The session object, in the GA shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    #[serde(rename = "type")]
    kind: SessionType,
    /// The model; on Azure, the realtime deployment's name.
    pub model: String,
    /// The system instructions (persona and context).
    pub instructions: String,
    /// What the model produces: audio for calls.
    pub output_modalities: Vec<Modality>,
    /// Audio in and out.
    pub audio: Audio,
    /// Functions the model may call.
    pub tools: Vec<Tool>,
    /// Whether it may call them.
    pub tool_choice: ToolChoice,
    /// Largest response in tokens; `None`: no limit (`inf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

/// Always `realtime` (the other session type is transcription-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum SessionType {
    Realtime,
}

/// `audio`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audio {
    /// What the caller says.
    pub input: AudioInput,
    /// What the model says.
    pub output: AudioOutput,
}

/// `audio.input`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioInput {
    /// Noise reduction; `None` sends `null` (off).
    pub noise_reduction: Option<NoiseReductionConfig>,
    /// Transcription of the caller; `None` sends `null` (off).
    pub transcription: Option<Transcription>,
    /// Turn detection; `None` sends `null`: turns end only when we commit the buffer.
    pub turn_detection: Option<TurnDetection>,
}

/// `audio.input.noise_reduction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NoiseReductionConfig {
    /// Which.
    #[serde(rename = "type")]
    pub kind: NoiseReduction,
}

/// `audio.input.transcription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transcription {
    /// The transcription model (Azure: its deployment).
    pub model: String,
    /// ISO-639-1 language; `None`: detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// `audio.output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioOutput {
    /// The voice.
    pub voice: Voice,
    /// Speaking speed, 0.25–1.5; `None`: the default (1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
}

impl Session {
    /// The session for a call: the settings from `realtime`, the model from `ai`, the
    /// `instructions` rendered for this caller (see [`super::persona`]), and `tools`.
    pub fn new(
        ai: &AiConfig,
        realtime: &RealtimeConfig,
        instructions: String,
        tools: &[FunctionTool],
    ) -> Self {
        Self {
            kind: SessionType::Realtime,
            model: realtime_model(ai).to_owned(),
            instructions,
            output_modalities: vec![Modality::Audio],
            audio: Audio {
                input: AudioInput {
                    noise_reduction: realtime
                        .noise_reduction
                        .map(|kind| NoiseReductionConfig { kind }),
                    transcription: Some(Transcription {
                        model: ai.transcribe_model.clone(),
                        language: realtime.transcription_language.clone(),
                    }),
                    turn_detection: realtime.turn_detection.clone(),
                },
                output: AudioOutput {
                    voice: realtime.voice.clone(),
                    speed: realtime.speed,
                },
            },
            tools: tools.iter().cloned().map(Tool::Function).collect(),
            tool_choice: ToolChoice::Auto,
            max_output_tokens: realtime.max_output_tokens,
        }
    }

    /// The session as a JSON value (the body's `session`).
    pub fn to_value(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(value) => value,
            // Strings, numbers, bools, sequences and `Value`s only: cannot fail.
            Err(err) => unreachable!("a session always serialises: {err}"),
        }
    }
}

/// The `model` of the session: the deployment name on Azure, the model name on OpenAI.
pub fn realtime_model(ai: &AiConfig) -> &str {
    match &ai.provider {
        Some(AiProvider::Azure {
            deployment: Some(deployment),
            ..
        }) => deployment,
        Some(AiProvider::Azure {
            deployment: None, ..
        })
        | Some(AiProvider::OpenAi { .. })
        | None => &ai.realtime_model,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{Config, LoadOptions};

    fn config(pairs: &[(&str, &str)]) -> Config {
        let env = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::load(&LoadOptions::default(), env).expect("valid config")
    }

    fn add_task() -> FunctionTool {
        FunctionTool {
            name: "add_task".into(),
            description: "Add a task to the caller's list.".into(),
            parameters: json!({"type": "object", "properties": {"title": {"type": "string"}},
                "required": ["title"]}),
        }
    }

    #[test]
    fn the_default_session_is_the_ga_shape_for_a_phone_call() {
        let config = config(&[("OPENAI_API_KEY", "sk-x")]);
        let session = Session::new(
            &config.ai,
            &config.realtime,
            "Be brief.".into(),
            &[add_task()],
        );
        assert_eq!(
            session.to_value(),
            json!({
                "type": "realtime",
                "model": "gpt-realtime",
                "instructions": "Be brief.",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "noise_reduction": {"type": "near_field"},
                        "transcription": {"model": "gpt-4o-transcribe"},
                        "turn_detection": {"type": "server_vad", "threshold": 0.5,
                            "prefix_padding_ms": 300, "silence_duration_ms": 500,
                            "create_response": true, "interrupt_response": true}
                    },
                    "output": {"voice": "marin"}
                },
                "tools": [{"type": "function", "name": "add_task",
                    "description": "Add a task to the caller's list.",
                    "parameters": {"type": "object", "properties": {"title": {"type": "string"}},
                        "required": ["title"]}}],
                "tool_choice": "auto"
            })
        );
    }

    #[test]
    fn no_beta_field_name_is_ever_emitted() {
        let config = config(&[
            ("OPENAI_API_KEY", "sk-x"),
            ("REALTIME_TURN_DETECTION", "semantic_vad"),
            ("REALTIME_VAD_EAGERNESS", "high"),
            ("REALTIME_TRANSCRIPTION_LANGUAGE", "de"),
            ("REALTIME_VOICE_SPEED", "1.2"),
            ("REALTIME_MAX_OUTPUT_TOKENS", "800"),
            ("REALTIME_NOISE_REDUCTION", "none"),
        ]);
        let value =
            Session::new(&config.ai, &config.realtime, "x".into(), &[add_task()]).to_value();
        let text = value.to_string();
        for beta in [
            "\"modalities\"",
            "input_audio_format",
            "output_audio_format",
            "input_audio_transcription",
            "\"temperature\"",
            "max_response_output_tokens",
        ] {
            assert!(!text.contains(beta), "{beta} in {text}");
        }
        for top_level_beta in ["voice", "turn_detection"] {
            assert!(
                value.get(top_level_beta).is_none(),
                "{top_level_beta} at top level"
            );
        }
        assert_eq!(
            value["audio"]["input"]["turn_detection"],
            json!({"type": "semantic_vad", "eagerness": "high", "create_response": true,
                "interrupt_response": true})
        );
        assert_eq!(value["audio"]["input"]["noise_reduction"], json!(null));
        assert_eq!(value["audio"]["input"]["transcription"]["language"], "de");
        assert_eq!(
            value["audio"]["output"],
            json!({"voice": "marin", "speed": 1.2})
        );
        assert_eq!(value["max_output_tokens"], 800);
        assert!(value["audio"]["input"].get("format").is_none());
    }

    #[test]
    fn turn_detection_none_sends_null_for_manual_turns() {
        let config = config(&[
            ("OPENAI_API_KEY", "sk-x"),
            ("REALTIME_TURN_DETECTION", "none"),
        ]);
        let value = Session::new(&config.ai, &config.realtime, "x".into(), &[]).to_value();
        assert_eq!(value["audio"]["input"]["turn_detection"], json!(null));
        assert_eq!(value["tools"], json!([]));
    }

    #[test]
    fn on_azure_the_model_is_the_deployment() {
        let config = config(&[
            ("AZURE_OPENAI_API_KEY", "az"),
            ("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com"),
            ("AZURE_OPENAI_DEPLOYMENT", "my-realtime"),
        ]);
        let session = Session::new(&config.ai, &config.realtime, "x".into(), &[]);
        assert_eq!(session.model, "my-realtime");
    }

    #[test]
    fn voices_are_the_built_in_ones() {
        assert_eq!(Voice::parse("Cedar").expect("voice").as_str(), "cedar");
        assert!(
            Voice::parse("nova").is_err(),
            "a TTS voice, not a Realtime one"
        );
    }
}
