"""qsgw.crypto: key exchange methods, PRFs, IKE and ESP ciphers.

Callers depend on the Protocols in `qsgw.crypto.api` and on the lookup
functions exported here; the modules beside them are implementation:

- `dh`: Curve25519/Curve448, ECP-256/384/521, MODP-2048/3072
- `mlkem`: ML-KEM-768/1024 (OpenSSL), ML-KEM-512 (liboqs, when present)
- `prf`, `integrity`: PRF_HMAC_SHA2_* and AUTH_HMAC_SHA2_* (RFC 4868)
- `ike_cipher`: the SK payload (RFC 7296 §3.14, RFC 5282, RFC 7634)
- `esp`: ESP packet protection for the data plane
- `supply`: key exchange halves made ahead, in a daemon's idle time

Every failure raises `qsgw.crypto.api.CryptoError` or a subclass.
"""

from qsgw.crypto.esp import esp_cipher, esp_keymat_size
from qsgw.crypto.ike_cipher import ike_cipher
from qsgw.crypto.integrity import integrity
from qsgw.crypto.key_exchange import available_ke_methods, ke_method
from qsgw.crypto.prf import prf

__all__ = [
    "available_ke_methods",
    "esp_cipher",
    "esp_keymat_size",
    "ike_cipher",
    "integrity",
    "ke_method",
    "prf",
]
