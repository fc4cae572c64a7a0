"""Small test peers that speak the real wire protocols ambientctl's live transports use.

No Docker engine, Kubernetes cluster or remote node runs on the machines this project
is built and tested on, so the transports are proven against these instead:

- `sshd.py`: a real OpenSSH `sshd`, started on loopback inside an emulated node's network
  namespace (reached through a loopback forwarder), with throwaway keys.
- `docker_engine.py`: a unix-socket HTTP server speaking the Docker Engine API for the few
  calls ambientctl makes (ping, version, container list/inspect, exec create/start with the
  multiplexed stream, exec inspect).
- `kube_api.py`: an HTTP + WebSocket server speaking the Kubernetes API for discovery lists
  and `pods/exec` over the `v4.channel.k8s.io` subprotocol.

The unmodified docker SDK, kubernetes client and paramiko talk to them. Every command they
are asked to run is executed for real (`ip netns exec`) in the emulated node or pod's
network namespace, so the bytes that come back are what the kernel says.
"""
