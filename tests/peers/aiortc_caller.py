#!/usr/bin/env python3
"""A caller built on aiortc, an independent WebRTC implementation, for interop tests.

It plays the user's phone calling the bridge: it makes the SDP offer, sends a 440 Hz tone
(Opus, encoded by libopus through PyAV) and analyses what comes back. Talks to the test over
stdin/stdout, one JSON object per line:

    -> {"offer": "<sdp>"}            the offer to put in a WhatsApp connect webhook
    <- {"answer": "<sdp>"}           the bridge's answer (from the Graph accept request)
    -> {"connected": true}           ICE and DTLS are up
    -> {"result": {...}}             after --seconds of tone: what came back, and what the
                                     bridge's RTCP reports said (`reports`)

Only 127.0.0.1 is used: aioice leaves loopback out of its host candidates, so the gathering
is pointed at it (test traffic stays on loopback).

`--srtp aes-cm` offers only SRTP_AES128_CM_SHA1_80 in DTLS, so the call either runs on that
profile (libsrtp's AES counter mode and HMAC-SHA1) or does not connect; by default aiortc
offers AES-GCM first, as str0m, browsers and most servers do.
"""

import argparse
import array
import asyncio
import fractions
import json
import math
import sys
import time

import aioice.ice
import aiortc.rtcdtlstransport
from av import AudioFrame
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

RATE = 48000
FRAME = 960  # 20 ms


class Tone(MediaStreamTrack):
    """A sine tone, 20 ms frames at real-time pace."""

    kind = "audio"

    def __init__(self, frequency: float):
        super().__init__()
        self.frequency = frequency
        self.pts = 0
        self.start = None

    async def recv(self) -> AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        target = self.start + self.pts / RATE
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        samples = array.array(
            "h",
            (
                int(12000 * math.sin(2 * math.pi * self.frequency * (self.pts + i) / RATE))
                for i in range(FRAME)
            ),
        )
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += FRAME
        return frame


def analyse(samples: array.array, channels: int) -> dict:
    """RMS and the dominant frequency (zero crossings) of the first channel."""
    mono = samples[::channels] if channels > 1 else samples
    if not mono:
        return {"rms": 0.0, "frequency": 0.0, "samples": 0}
    rms = math.sqrt(sum(s * s for s in mono) / len(mono))
    crossings = sum(1 for a, b in zip(mono, mono[1:]) if (a < 0) != (b < 0))
    frequency = crossings / 2 / (len(mono) / RATE)
    return {"rms": rms, "frequency": frequency, "samples": len(mono)}


async def reports(pc: RTCPeerConnection) -> dict:
    """What the bridge's RTCP reports told aiortc: its receiver reports about our tone
    (`remote-inbound-rtp`: loss, and the round trip aiortc works out from the report's echo of
    its last sender report) and its sender reports about the echo (`remote-outbound-rtp`)."""
    found = {"remote_inbound": None, "remote_outbound": None}
    for stats in (await pc.getStats()).values():
        if stats.type == "remote-inbound-rtp":
            found["remote_inbound"] = {
                "packets_lost": stats.packetsLost,
                "fraction_lost": stats.fractionLost,
                "round_trip_time": stats.roundTripTime,
            }
        elif stats.type == "remote-outbound-rtp":
            found["remote_outbound"] = {
                "packets_sent": stats.packetsSent,
                "bytes_sent": stats.bytesSent,
            }
    return found


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--frequency", type=float, default=440.0)
    parser.add_argument("--srtp", choices=["any", "aes-cm"], default="any")
    args = parser.parse_args()
    if args.srtp == "aes-cm":
        # Read by each new DTLS transport: the only profile this caller will agree to.
        aiortc.rtcdtlstransport.SRTP_PROFILES = [aiortc.rtcdtlstransport.SRTP_AES128_CM_SHA1_80]

    pc = RTCPeerConnection()
    pc.addTrack(Tone(args.frequency))
    connected = asyncio.Event()
    received_tracks = []

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    @pc.on("track")
    def on_track(track) -> None:
        received_tracks.append(track)

    await pc.setLocalDescription(await pc.createOffer())
    say({"offer": pc.localDescription.sdp})

    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    answer = json.loads(line)["answer"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), timeout=15)
    say({"connected": True})

    # Collect what comes back while the tone plays; skip the first half second (the echo's
    # delay and the decoder settling).
    collected = array.array("h")
    channels = 1
    frames = 0
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        if not received_tracks:
            await asyncio.sleep(0.02)
            continue
        try:
            frame = await asyncio.wait_for(received_tracks[0].recv(), timeout=1.0)
        except asyncio.TimeoutError:
            continue
        frames += 1
        if time.monotonic() - started < 0.5:
            continue
        channels = len(frame.layout.channels)
        collected.frombytes(bytes(frame.planes[0])[: frame.samples * channels * 2])

    result = {"frames": frames, **analyse(collected, channels), **await reports(pc)}
    say({"result": result})
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
