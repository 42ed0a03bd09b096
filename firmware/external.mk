include $(sort $(wildcard $(BR2_EXTERNAL_SIPEDGE_PATH)/package/*/*.mk))
