"""SeeCoder configuration: one dataclass per part, official full-size values as defaults.

Spec sections a.2 (Swin-L), a.3 (decoder), a.4 (query transformer), a.5 (PA position encoding).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from ..errors import ConfigError

LEVELS = ("res3", "res4", "res5")  # backbone stages 1, 2, 3 (strides 8, 16, 32)


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int = 192
    depths: Tuple[int, ...] = (2, 2, 18, 2)
    num_heads: Tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_size: int = 4
    in_chans: int = 3
    drop_path_rate: float = 0.3  # training only

    @property
    def stage_dims(self) -> Tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: Tuple[Tuple[str, int], ...] = (("res3", 384), ("res4", 768), ("res5", 1536))
    dim: int = 768
    num_heads: int = 8
    ffn_dim: int = 1024
    num_layers: int = 6
    dropout: float = 0.1  # training only

    def channels(self, level: str) -> int:
        return dict(self.in_channels)[level]


@dataclass(frozen=True)
class QueryTransformerConfig:
    dim: int = 768
    num_heads: int = 8
    num_layers: int = 9
    ffn_dim: int = 2048
    num_queries: Tuple[int, int] = (4, 144)  # (global, local)
    num_levels: int = 3


@dataclass(frozen=True)
class PositionEncodingConfig:
    """SeeCoder-PA: sinusoidal features of each memory position through an MLP (keys only)."""

    freq_num: int = 20
    freq_max: Optional[float] = None  # None: half the shorter side of each feature map
    out_channels: int = 768
    mlp_layers: int = 3


@dataclass(frozen=True)
class SeeCoderConfig:
    swin: SwinConfig = field(default_factory=SwinConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    qtransformer: QueryTransformerConfig = field(default_factory=QueryTransformerConfig)
    position_encoding: Optional[PositionEncodingConfig] = None  # set: SeeCoder-PA

    @property
    def position_aware(self) -> bool:
        return self.position_encoding is not None

    @property
    def out_dim(self) -> int:
        return self.qtransformer.dim

    @property
    def num_tokens(self) -> int:
        return sum(self.qtransformer.num_queries)

    @classmethod
    def official(cls, position_aware: bool = False) -> "SeeCoderConfig":
        """The released full-size model (plain/anime, or PA)."""
        return cls(position_encoding=PositionEncodingConfig() if position_aware else None)

    def with_position_encoding(self) -> "SeeCoderConfig":
        """The PA variant of this config (same base model plus the PE MLP)."""
        return dataclasses.replace(
            self, position_encoding=PositionEncodingConfig(out_channels=self.qtransformer.dim)
        )

    def validate(self) -> "SeeCoderConfig":
        s, d, q = self.swin, self.decoder, self.qtransformer
        if len(s.depths) != 4 or len(s.num_heads) != 4:
            raise ConfigError(f"SeeCoder needs 4 Swin stages, got depths={s.depths} heads={s.num_heads}")
        dims = s.stage_dims
        expected = {"res3": dims[1], "res4": dims[2], "res5": dims[3]}
        if dict(d.in_channels) != expected:
            raise ConfigError(
                f"decoder in_channels {dict(d.in_channels)} do not match the Swin stage widths {expected}"
            )
        if d.dim != q.dim:
            raise ConfigError(
                f"decoder width {d.dim} differs from query transformer width {q.dim}; "
                "the official model has no input projection"
            )
        for name, dim, heads in (("decoder", d.dim, d.num_heads), ("qtransformer", q.dim, q.num_heads)):
            if dim % heads:
                raise ConfigError(f"{name} width {dim} is not divisible by its {heads} heads")
        if d.dim % 32:
            raise ConfigError(f"decoder width {d.dim} must be a multiple of 32 (GroupNorm(32))")
        if self.position_encoding and self.position_encoding.out_channels != q.dim:
            raise ConfigError("PA position-encoding width must equal the query transformer width")
        return self

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_official_dict(cls, d: Mapping[str, Any]) -> "SeeCoderConfig":
        """Build from the official config fields (``swin``, ``decoder``, ``qtransformer``,
        optional ``pa_pe_layer``), as in the parity fixtures' ``*_config.json``."""
        try:
            sw, de, qt = d["swin"], d["decoder"], d["qtransformer"]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"official SeeCoder config needs 'swin', 'decoder' and 'qtransformer': missing {e}") from None
        try:
            if sw.get("ape", False):
                raise ConfigError("absolute position embedding (ape=True) is not part of SeeCoder")
            if not sw.get("patch_norm", True):
                raise ConfigError("SeeCoder's Swin always has patch_norm=True")
            if qt.get("pre_norm", False):
                raise ConfigError("SeeCoder's query transformer is post-norm (pre_norm=False)")
            if qt.get("enforce_input_project", False) or qt.get("in_channels", qt["hidden_dim"]) != qt["hidden_dim"]:
                raise ConfigError("query transformer input projection is not used by SeeCoder")
            swin = SwinConfig(
                embed_dim=int(sw["embed_dim"]),
                depths=tuple(int(x) for x in sw["depths"]),
                num_heads=tuple(int(x) for x in sw["num_heads"]),
                window_size=int(sw.get("window_size", 12)),
                mlp_ratio=float(sw.get("mlp_ratio", 4.0)),
                qkv_bias=bool(sw.get("qkv_bias", True)),
                patch_size=int(sw.get("patch_size", 4)),
                in_chans=int(sw.get("in_chans", 3)),
                drop_path_rate=float(sw.get("drop_path_rate", 0.3)),
            )
            decoder = DecoderConfig(
                in_channels=tuple((k, int(de["inchannels"][k])) for k in LEVELS),
                dim=int(de["trans_dim"]),
                num_heads=int(de["trans_nheads"]),
                ffn_dim=int(de["trans_feedforward_dim"]),
                num_layers=int(de["trans_num_layers"]),
                dropout=float(de.get("trans_dropout", 0.1)),
            )
            if sorted(de.get("trans_input_tags", LEVELS)) != sorted(LEVELS):
                raise ConfigError("SeeCoder's decoder runs its transformer over res3, res4 and res5")
            queries = tuple(int(x) for x in qt["num_queries"])
            if len(queries) != 2:
                raise ConfigError(f"num_queries must be [global, local], got {queries}")
            qtrans = QueryTransformerConfig(
                dim=int(qt["hidden_dim"]),
                num_heads=int(qt["nheads"]),
                num_layers=int(qt["num_layers"]),
                ffn_dim=int(qt["feedforward_dim"]),
                num_queries=queries,
                num_levels=int(qt.get("num_feature_levels", 3)),
            )
            pe = None
            if d.get("pa_pe_layer"):
                p = d["pa_pe_layer"]
                pe = PositionEncodingConfig(
                    freq_num=int(p.get("freq_num", 20)),
                    freq_max=None if p.get("freq_max") is None else float(p["freq_max"]),
                    out_channels=int(p.get("out_channel", qtrans.dim)),
                    mlp_layers=int(p.get("mlp_layer", 3)),
                )
        except KeyError as e:
            raise ConfigError(f"official SeeCoder config is missing the field {e}") from None
        return cls(swin, decoder, qtrans, pe).validate()

    def to_official_dict(self) -> dict:
        """The official config fields (JSON-ready), the inverse of ``from_official_dict``: what
        ``prompt_free.diffusers_door.SeeCoderModel`` keeps in its ``config.json``."""
        s, d, q, p = self.swin, self.decoder, self.qtransformer, self.position_encoding
        out = {
            "swin": {"embed_dim": s.embed_dim, "depths": list(s.depths), "num_heads": list(s.num_heads),
                     "window_size": s.window_size, "mlp_ratio": s.mlp_ratio, "qkv_bias": s.qkv_bias,
                     "patch_size": s.patch_size, "in_chans": s.in_chans, "drop_path_rate": s.drop_path_rate},
            "decoder": {"inchannels": dict(d.in_channels), "trans_dim": d.dim, "trans_nheads": d.num_heads,
                        "trans_feedforward_dim": d.ffn_dim, "trans_num_layers": d.num_layers,
                        "trans_dropout": d.dropout},
            "qtransformer": {"hidden_dim": q.dim, "nheads": q.num_heads, "num_layers": q.num_layers,
                             "feedforward_dim": q.ffn_dim, "num_queries": list(q.num_queries),
                             "num_feature_levels": q.num_levels},
            "pa_pe_layer": None,
        }
        if p is not None:
            out["pa_pe_layer"] = {"freq_num": p.freq_num, "freq_max": p.freq_max, "out_channel": p.out_channels,
                                  "mlp_layer": p.mlp_layers}
        return out

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "SeeCoderConfig":
        """Read the sizes of a SeeCoder from its (prefix-free) state dict's shapes.

        Head counts of the decoder and query transformer and the global/local split of the
        queries are not visible in the weights: the official values (8 heads, 4 global) are used.
        """
        def shape(key):
            if key not in sd:
                raise ConfigError(f"cannot read the SeeCoder size: key '{key}' is missing")
            return tuple(sd[key].shape)

        embed_dim = shape("imencoder.patch_embed.proj.weight")[0]
        patch = shape("imencoder.patch_embed.proj.weight")[-1]
        depths, heads = [], []
        for i in range(4):
            n = 0
            while f"imencoder.layers.{i}.blocks.{n}.norm1.weight" in sd:
                n += 1
            if n == 0:
                raise ConfigError(f"cannot read the SeeCoder size: stage {i} has no blocks")
            depths.append(n)
            table = shape(f"imencoder.layers.{i}.blocks.0.attn.relative_position_bias_table")
            heads.append(table[1])
        window = int(round(table[0] ** 0.5) + 1) // 2
        mlp_ratio = shape("imencoder.layers.0.blocks.0.mlp.fc1.weight")[0] / embed_dim
        dec_dim = shape("imdecoder.level_embed")[1]
        n_dec = 0
        while f"imdecoder.transformer.layers.{n_dec}.linear1.weight" in sd:
            n_dec += 1
        dims = [embed_dim * 2**i for i in range(4)]
        q_dim = shape("qtransformer.init_query.weight")[1]
        n_q = shape("qtransformer.init_query.weight")[0]
        n_layers = 0
        while f"qtransformer.transformer_feedforward_layers.{n_layers}.linear1.weight" in sd:
            n_layers += 1
        pe = None
        if "qtransformer.pe_layer.mlp.0.weight" in sd:
            n_mlp = 0
            while f"qtransformer.pe_layer.mlp.{2 * n_mlp}.weight" in sd:
                n_mlp += 1
            pe = PositionEncodingConfig(
                freq_num=shape("qtransformer.pe_layer.mlp.0.weight")[1] // 4,
                out_channels=q_dim,
                mlp_layers=n_mlp,
            )
        return cls(
            SwinConfig(embed_dim, tuple(depths), tuple(heads), window, mlp_ratio, True, patch),
            DecoderConfig(
                in_channels=(("res3", dims[1]), ("res4", dims[2]), ("res5", dims[3])),
                dim=dec_dim,
                ffn_dim=shape("imdecoder.transformer.layers.0.linear1.weight")[0],
                num_layers=n_dec,
            ),
            QueryTransformerConfig(
                dim=q_dim,
                num_layers=n_layers,
                ffn_dim=shape("qtransformer.transformer_feedforward_layers.0.linear1.weight")[0],
                num_queries=(4, n_q - 4),
                num_levels=shape("qtransformer.level_embed.weight")[0],
            ),
            pe,
        ).validate()
