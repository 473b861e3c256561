# Mask R-CNN FPN 2x with a DN backbone as a detectron2 LazyConfig (detectron2's model-zoo pieces), the paper's
# schedule: 180k iterations, batch 16, lr 0.02, steps at 120k and 160k, SyncBN in the backbone and FPN. The DN is
# one key, model.backbone.bottom_up.dn; weights from tools/convert_to_d2.py --dn DN. Train with
#   python -m dspnet_d2.d2.lazy_train --config-file configs/detection/lazy/mask_rcnn_dn_fpn_2x.py --num-gpus 8 \
#       model.backbone.bottom_up.dn=resnet18 train.init_checkpoint=resnet18.pkl
# or with detectron2's tools/lazyconfig_train_net.py (a supernet .pkl needs this package's command).
from dspnet_d2.d2.lazy import dn_mask_rcnn_fpn, model_zoo_config

model = dn_mask_rcnn_fpn(dn="mbv3_w0.5", norm="SyncBN")

dataloader = model_zoo_config("common/data/coco.py").dataloader
dataloader.train.mapper.image_format = "RGB"
dataloader.test.mapper.image_format = "RGB"

optimizer = model_zoo_config("common/optim.py").SGD
optimizer.lr = 0.02

lr_multiplier = model_zoo_config("common/coco_schedule.py").lr_multiplier_2x  # 180k, steps 120k / 160k

train = model_zoo_config("common/train.py").train
train.max_iter = 180000
train.init_checkpoint = ""
train.output_dir = "output/detection/lazy_mask_rcnn_dn_fpn_2x"
