"""The built-in backbones, registered in one place.

Each ``keras.applications`` entry is registered with its own preprocessing and
native input size, taken from the Keras documentation of that model.
"""

from __future__ import annotations

from typing import Any

from ._registry import register_backbone

__all__: list[str] = []


def _keras_app(function_name: str, **fixed: Any) -> Any:
    """A builder that calls ``keras.applications.<function_name>`` without its top."""

    def builder(input_shape: tuple[int, int, int], weights: str | None = "imagenet") -> Any:
        import keras

        function = getattr(keras.applications, function_name)
        return function(include_top=False, weights=weights, input_shape=input_shape, **fixed)

    builder.__name__ = f"keras_applications_{function_name}"
    builder.__doc__ = f"``keras.applications.{function_name}`` without its classification top."
    return builder


def _lite_builder(variant: str) -> Any:
    """A builder of the EfficientNet-Lite ``variant`` without its classification top."""

    def builder(input_shape: tuple[int, int, int], weights: str | None = "imagenet") -> Any:
        from ._lite import efficientnet_lite

        return efficientnet_lite(variant, input_shape, weights=weights, include_top=False)

    builder.__name__ = f"{variant}_builder"
    builder.__doc__ = f"``{variant}`` without its classification top."
    return builder


_KERAS = "keras.applications download (ImageNet)"

# (name, keras.applications function, preprocess mode, native size, smallest size, family)
_KERAS_APPLICATIONS: list[tuple[str, str, str, int, int, str]] = [
    ("xception", "Xception", "tf", 299, 71, "xception"),
    ("inception_v3", "InceptionV3", "tf", 299, 75, "inception"),
    ("resnet50", "ResNet50", "caffe", 224, 32, "resnet"),
    ("resnet50_v2", "ResNet50V2", "tf", 224, 32, "resnet"),
    ("mobilenet_v2", "MobileNetV2", "tf", 224, 32, "mobilenet"),
    ("mobilenet_v3_small", "MobileNetV3Small", "none", 224, 32, "mobilenet"),
    ("mobilenet_v3_large", "MobileNetV3Large", "none", 224, 32, "mobilenet"),
    ("densenet121", "DenseNet121", "torch", 224, 32, "densenet"),
    ("densenet169", "DenseNet169", "torch", 224, 32, "densenet"),
    ("densenet201", "DenseNet201", "torch", 224, 32, "densenet"),
    ("vgg16", "VGG16", "caffe", 224, 32, "vgg"),
    ("convnext_tiny", "ConvNeXtTiny", "none", 224, 32, "convnext"),
    ("convnext_small", "ConvNeXtSmall", "none", 224, 32, "convnext"),
    ("convnext_base", "ConvNeXtBase", "none", 224, 32, "convnext"),
    ("convnext_large", "ConvNeXtLarge", "none", 224, 32, "convnext"),
    ("convnext_xlarge", "ConvNeXtXLarge", "none", 224, 32, "convnext"),
]
_KERAS_APPLICATIONS += [
    (f"efficientnet_b{i}", f"EfficientNetB{i}", "none", size, 32, "efficientnet")
    for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
]
_KERAS_APPLICATIONS += [
    (f"efficientnet_v2_{v.lower()}", f"EfficientNetV2{v}", "none", size, 32, "efficientnet_v2")
    for v, size in (
        ("B0", 224),
        ("B1", 240),
        ("B2", 260),
        ("B3", 300),
        ("S", 384),
        ("M", 480),
        ("L", 480),
    )
]


def _register_builtins() -> None:
    for name, function_name, preprocess, size, min_size, family in _KERAS_APPLICATIONS:
        register_backbone(
            name,
            _keras_app(function_name),
            preprocess=preprocess,
            default_size=size,
            min_size=min_size,
            weights=_KERAS,
            family=family,
            licence="see the keras.applications documentation",
        )
    from ._lite_arch import VARIANTS

    for variant in VARIANTS.values():
        register_backbone(
            variant.name,
            _lite_builder(variant.name),
            preprocess="tf",
            default_size=variant.size,
            min_size=32,
            weights=f"offline ImageNet checkpoint from the {variant.package} package",
            family="efficientnet_lite",
            licence="Apache-2.0",
            extra="lite",
            taps=r"block\d+_out",
        )


_register_builtins()
