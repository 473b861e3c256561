from setuptools import find_packages, setup

setup(
    name="dspnet",
    version="0.1.0",
    description="DSPNet: slimmable networks pretrained once with BYOL, and their detectron2 backbones",
    license="MIT",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["dspnet_d2", "dspnet_d2.*", "pretrain", "pretrain.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "iopath>=0.1.7,<0.1.10",  # detectron2 pins iopath<0.1.10
        "yacs>=0.1.8",
        "tqdm",
        "numpy",
        "pillow",
        "opencv-python-headless",  # the fast augmentation backend (pretrain/data/augment.py); detectron2's Visualizer
        "matplotlib",
        "tensorboard",
        "pycocotools",
    ],
    extras_require={
        "dev": ["pytest>=7"],
        # deployment: ONNX export (torch's dynamo exporter writes through onnxscript) and its checks
        "deploy": ["onnx", "onnxscript", "onnxruntime"],
        # tools/submit.py: any command as a Slurm job (pretrain/engine/submit.py)
        "slurm": ["submitit"],
        # LOGGER.WANDB: the metrics mirrored to Weights & Biases (pretrain/engine/wandb_logger.py)
        "wandb": ["wandb"],
    },
)
