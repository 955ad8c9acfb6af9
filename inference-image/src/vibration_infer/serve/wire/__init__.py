"""The project's own MQTT 5 client, serve's default link, in four layers.

`link.WireLink` (the network thread, the lock, the session) uses
`connection` (dial, TLS, CONNECT/CONNACK, non-blocking writes), `outbound`
(the pure state machine of what is owed to the broker), and `codec` and
`parser` (pure functions over bytes: the packets sent, the stream read).
Why a client of our own, and what it keeps alike with paho: `link`'s
module docstring.
"""
