"""{{ project }}: a Django service deployed with es."""
