"""Secure aggregation: the server learns only the sum of the surviving clients' inputs.

Implements SecAgg (Bonawitz et al., CCS 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning") on the sparse random neighbour graph of SecAgg+
(Bell et al., CCS 2020). ``k=None`` gives the complete graph, i.e. plain SecAgg.

Threat model
------------
* Server: honest but curious. It follows the protocol and tries to learn individual inputs from
  what it sees. Up to t-1 clients (t = Shamir threshold; in SecAgg+ counted within a
  neighbourhood) may collude with it, where they pool everything they hold.
* What the server sees: every client's public keys (c_u^PK, s_u^PK); the encrypted shares it
  routes, which it cannot open (ChaCha20-Poly1305 under keys agreed between clients); the masked
  vectors y_u, each uniformly random in Z_M^d on its own; in unmasking, the shares it requests:
  shares of the self-mask seed b_v of each survivor and of the mask key s_v^SK of each client
  that dropped after sharing (never both for one client); and the unmasked sum of the
  survivors' inputs mod M.
* Clients refuse an unmasking request that names a client both surviving and dropped, that
  does not name themselves as surviving, or that comes a second time, so an honest-but-curious
  server cannot obtain both b_v and s_v^SK of an honest client through them.
* Out of scope: a malicious server that lies about dropouts beyond this consistency check (the
  signature-based ConsistencyCheck round of Bonawitz et al. is not implemented, so a malicious
  server could, e.g., tell different clients different survivor sets); malicious clients that
  send wrong shares in unmasking (a wrong b_v share silently corrupts the sum; a wrong s_v^SK is
  detected because the reconstructed key must match the advertised public key); an
  authenticated PKI: in simulation public keys are taken as delivered, so a server that swaps
  keys could man-in-the-middle the share encryption; side channels and the privacy of the sum
  itself (combine with differential privacy for that).

Modules
-------
``quantize`` float <-> Z_{2**bits}; ``prg`` ChaCha20 mask expansion; ``crypto`` X25519, AEAD,
Shamir; ``graph`` SecAgg+ neighbour graph; ``messages`` wire messages; ``protocol`` client and
server state machines; ``simulate`` a one-process driver, :func:`secure_sum`.
"""

from fedops.secagg.crypto import agree, combine_shares, generate_keypair, split_secret
from fedops.secagg.errors import (
    InsufficientNeighbours,
    ProtocolViolation,
    SecAggAborted,
    SecAggError,
    ShareDecryptionError,
)
from fedops.secagg.graph import default_k, default_threshold, neighbour_graph
from fedops.secagg.prg import expand_mask
from fedops.secagg.protocol import ClientState, ServerState
from fedops.secagg.quantize import check_overflow, dequantize_sum, quantize
from fedops.secagg.simulate import STAGES, SecAggResult, Tamper, sample_dropouts, secure_sum

__all__ = [
    "STAGES",
    "ClientState",
    "InsufficientNeighbours",
    "ProtocolViolation",
    "SecAggAborted",
    "SecAggError",
    "SecAggResult",
    "ServerState",
    "ShareDecryptionError",
    "Tamper",
    "agree",
    "check_overflow",
    "combine_shares",
    "default_k",
    "default_threshold",
    "dequantize_sum",
    "expand_mask",
    "generate_keypair",
    "neighbour_graph",
    "quantize",
    "sample_dropouts",
    "secure_sum",
    "split_secret",
]
