"""The simulated portfolio: sites × bridges × sensors, each sensor one phase of a circuit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sensor_sim.profiles import PROFILE_MIX, Profile, currents, sun_height

#: Where the simulated sites are, in turn: zone, latitude, longitude.
SITE_PLACES = [("Europe/London", 51.5, -0.13), ("Europe/Berlin", 52.52, 13.4), ("America/New_York", 40.71, -74.0),
               ("Asia/Kolkata", 22.57, 88.36), ("Australia/Sydney", -33.87, 151.2)]


@dataclass(frozen=True)
class Circuit:
    ref: str  # installers' device id, unique in the site
    name: str
    panel_ref: str
    phases: int
    profile: Profile
    rated_a: float
    sensor_serials: tuple[str, ...]

    @property
    def generates(self) -> bool:
        return self.profile is Profile.PV


@dataclass
class Site:
    index: int
    name: str
    timezone: str
    bridge_serials: list[str]
    circuits: list[Circuit]
    latitude: float = 51.5
    longitude: float = 0.0

    @property
    def code(self) -> str:
        return f"S{self.index:03d}"


@dataclass
class Fleet:
    sites: list[Site]
    #: per sensor, in one order: serial, bridge serial, site index, profile, rating, offset
    serials: list[str] = field(default_factory=list)
    bridge_of: list[str] = field(default_factory=list)
    site_of: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    profile: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    rated_a: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    offset_s: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.serials)

    def sensors_by_bridge(self) -> dict[str, npt.NDArray[np.int64]]:
        order: dict[str, list[int]] = {}
        for i, bridge in enumerate(self.bridge_of):
            order.setdefault(bridge, []).append(i)
        return {b: np.array(ix, dtype=np.int64) for b, ix in order.items()}

    def readings_at(self, t: float, rng: np.random.Generator,
                    weather: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        local_hour = np.empty(len(self.sites))
        open_now = np.empty(len(self.sites), dtype=bool)
        for i, site in enumerate(self.sites):
            local = datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo(site.timezone))
            local_hour[i] = local.hour + local.minute / 60.0
            open_now[i] = local.weekday() < 6 and 7.0 <= local_hour[i] < 19.0
        sun = sun_height(t, np.array([s.latitude for s in self.sites]), np.array([s.longitude for s in self.sites]))
        return currents(self.profile, self.rated_a, self.offset_s, t, local_hour[self.site_of],
                        open_now[self.site_of], weather[self.site_of], rng, sun[self.site_of])


def build_fleet(sites: int, bridges_per_site: int, sensors_per_bridge: int, seed: int = 7, *,
                pv_every: int = 0) -> Fleet:
    """A deterministic portfolio: the same arguments give the same serials and circuits.
    Every `pv_every`-th site (the first, then each `pv_every` on; 0: none) also has a
    rooftop PV array: a three-phase inverter circuit on a board of its own, on its first
    bridge, rated at the site's other circuits' total."""
    rng = np.random.default_rng(seed)
    fleet_sites: list[Site] = []
    serials: list[str] = []
    bridge_of: list[str] = []
    site_of: list[int] = []
    profiles: list[int] = []
    rated: list[float] = []
    for s in range(sites):
        code = f"S{s:03d}"
        zone, lat, lon = SITE_PLACES[s % len(SITE_PLACES)]
        site = Site(s, f"Site {s:03d}", zone, [], [], lat, lon)
        for b in range(bridges_per_site):
            bridge = f"BR-{code}-{b:02d}"
            site.bridge_serials.append(bridge)
            k = 0
            circuit_no = 0
            while k < sensors_per_bridge:
                # One in five circuits is three-phase, if the bridge has room for it.
                phases = 3 if rng.random() < 0.2 and sensors_per_bridge - k >= 3 else 1
                profile = Profile(int(rng.choice(len(PROFILE_MIX), p=PROFILE_MIX)))
                rating = float(rng.choice([16.0, 32.0, 63.0, 100.0]))
                ref = f"{code}-B{b:02d}-C{circuit_no:04d}"
                sensor_serials = tuple(f"CT{s:03d}{b:02d}{k + p:05d}" for p in range(phases))
                site.circuits.append(Circuit(ref, f"{profile.name.title()} {circuit_no}",
                                             f"{code}-B{b:02d}-PANEL", phases, profile, rating, sensor_serials))
                for serial in sensor_serials:
                    serials.append(serial)
                    bridge_of.append(bridge)
                    site_of.append(s)
                    profiles.append(int(profile))
                    rated.append(rating)
                k += phases
                circuit_no += 1
        if pv_every and s % pv_every == 0:
            bridge = site.bridge_serials[0]
            # Per phase; as much as the site's rated current in all: on a summer midday it gives
            # more than the site draws, as arrays sized for a roof, not for the load, do.
            rating = round(sum(c.rated_a * c.phases for c in site.circuits) / 3.0)
            sensor_serials = tuple(f"CT{s:03d}00{sensors_per_bridge + p:05d}" for p in range(3))
            site.circuits.append(Circuit(f"{code}-B00-PV", "Rooftop PV", f"{code}-PV", 3, Profile.PV,
                                         float(rating), sensor_serials))
            for serial in sensor_serials:
                serials.append(serial)
                bridge_of.append(bridge)
                site_of.append(s)
                profiles.append(int(Profile.PV))
                rated.append(float(rating))
        fleet_sites.append(site)
    n = len(serials)
    return Fleet(
        sites=fleet_sites, serials=serials, bridge_of=bridge_of,
        site_of=np.array(site_of, dtype=np.int32), profile=np.array(profiles, dtype=np.int8),
        rated_a=np.array(rated), offset_s=rng.uniform(0, 3600, n),
    )
