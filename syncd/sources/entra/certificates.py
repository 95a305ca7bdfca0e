"""Reading a certificate credential: a PEM file (key + certificate) or a PFX.

Kept apart from the config model so that loading a config without a certificate does
not import cryptography; :meth:`EntraSourceConfig.credential` imports this on demand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import SecretStr

from syncd.errors import ConfigError
from syncd.sources.entra.config import CertificateConfig, Credential

_PEM_KEY = re.compile(
    rb"-----BEGIN (?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----.+?-----END (?:ENCRYPTED |RSA |EC )?"
    rb"PRIVATE KEY-----",
    re.DOTALL,
)


def load_certificate(certificate: CertificateConfig) -> Credential:
    """Read and check a PEM (key + certificate) or PFX file; ConfigError naming the file."""
    path = certificate.path
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read certificate file {path}: {error.strerror}") from None
    passphrase = certificate.passphrase_value()
    password = passphrase.get_secret_value().encode() if passphrase is not None else None
    if b"-----BEGIN" in data:
        return _load_pem(path, data, passphrase, password)
    return _load_pfx(path, data, passphrase, password)


def _load_pem(
    path: Path, data: bytes, passphrase: SecretStr | None, password: bytes | None
) -> Credential:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            f"certificate file {path}: no PEM certificate in it (the file must hold the "
            "certificate and its private key)"
        ) from None
    key_block = _PEM_KEY.search(data)
    if key_block is None:
        raise ConfigError(
            f"certificate file {path}: no private key in it (append the key's PEM block)"
        )
    try:
        key = serialization.load_pem_private_key(key_block.group(0), password=password)
    except TypeError:
        # cryptography says "password was not given but key is encrypted" (or the reverse).
        needs = "needs a passphrase" if password is None else "is not encrypted: drop passphrase"
        raise ConfigError(f"certificate file {path}: the private key {needs}") from None
    except ValueError:
        raise ConfigError(
            f"certificate file {path}: the private key cannot be read (wrong passphrase?)"
        ) from None
    leaf = _matching_certificate(path, certificates, key)
    credential: dict[str, Any] = {
        "private_key": key_block.group(0).decode("ascii"),
        "public_certificate": leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }
    if passphrase is not None:
        credential["passphrase"] = passphrase.get_secret_value()
    return Credential(
        "certificate", credential, expires_at=leaf.not_valid_after_utc,
        thumbprint=_thumbprint(leaf),
    )  # fmt: skip


def _load_pfx(
    path: Path, data: bytes, passphrase: SecretStr | None, password: bytes | None
) -> Credential:
    try:
        key, leaf, _ = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise ConfigError(
            f"certificate file {path}: neither PEM nor a readable PFX (wrong passphrase?)"
        ) from None
    if key is None or leaf is None:
        raise ConfigError(f"certificate file {path}: the PFX must hold the key and the certificate")
    _matching_certificate(path, [leaf], key)
    credential: dict[str, Any] = {"private_key_pfx_path": str(path)}
    if passphrase is not None:
        credential["passphrase"] = passphrase.get_secret_value()
    return Credential(
        "certificate", credential, expires_at=leaf.not_valid_after_utc,
        thumbprint=_thumbprint(leaf),
    )  # fmt: skip


def _matching_certificate(path: Path, certificates: list[x509.Certificate], key: Any) -> Any:
    """The certificate of ``key`` among ``certificates`` (a PEM may carry its chain)."""
    wanted = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for certificate in certificates:
        public = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public == wanted:
            return certificate
    raise ConfigError(
        f"certificate file {path}: the private key belongs to none of its certificates"
    )


def _thumbprint(certificate: x509.Certificate) -> str:
    # SHA-1 only because the Entra portal lists certificates by it; not used for security.
    return certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
